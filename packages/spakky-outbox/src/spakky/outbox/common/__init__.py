"""Outbox common module: the message model, its configuration, stats, stored reasons and failure fingerprints."""
