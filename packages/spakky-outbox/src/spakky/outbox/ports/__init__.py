"""Ports the outbox core depends on: storage and its optional capabilities."""
