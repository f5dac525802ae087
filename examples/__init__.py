"""Runnable examples for spakky-outbox."""
