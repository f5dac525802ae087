"""The ``spakky-outbox`` operations command."""
