"""A small consumer service with idempotent handlers, used by the inbox tests."""
