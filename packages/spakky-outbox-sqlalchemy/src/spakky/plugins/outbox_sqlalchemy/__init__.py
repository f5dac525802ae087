"""SQLAlchemy storage (PostgreSQL, MariaDB/MySQL, SQLite) for spakky-outbox."""

from spakky.core.application.plugin import Plugin

PLUGIN_NAME = Plugin(name="spakky-outbox-sqlalchemy")
"""Plugin identifier for the SQLAlchemy outbox storage."""
