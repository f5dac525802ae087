"""Tracing through the outbox: spans where events are stored and sent."""
