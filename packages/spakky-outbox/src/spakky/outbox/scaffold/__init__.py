"""Scaffold of a new storage package (``spakky-outbox new-backend NAME``)."""
