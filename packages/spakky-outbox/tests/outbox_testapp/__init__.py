"""A small Spakky service used by the application tests."""
