"""A tiny orders and payments service keeping its data and its outbox in MongoDB."""
