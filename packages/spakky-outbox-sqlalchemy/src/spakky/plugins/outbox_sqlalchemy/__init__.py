"""SQLAlchemy storage for spakky-outbox."""
