"""A tiny orders service keeping its data and its outbox in one SQL database."""
