"""Outbox common module: message model, configuration, shared helpers."""
