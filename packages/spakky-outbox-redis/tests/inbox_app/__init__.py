"""Consumer service used by the Redis inbox application test."""
