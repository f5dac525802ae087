"""Orders service used by the application test."""
