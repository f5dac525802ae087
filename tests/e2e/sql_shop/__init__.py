"""Orders service backed by PostgreSQL through spakky-sqlalchemy."""
