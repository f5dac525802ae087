"""Outbox event buses: store integration events instead of sending them."""
