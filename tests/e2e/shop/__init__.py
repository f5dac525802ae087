"""A tiny orders service keeping its orders and its outbox in Redis."""
