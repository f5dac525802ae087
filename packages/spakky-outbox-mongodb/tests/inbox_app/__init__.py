"""Consumer service used by the inbox application test."""
