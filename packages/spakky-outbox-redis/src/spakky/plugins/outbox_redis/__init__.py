"""Redis storage for spakky-outbox."""
