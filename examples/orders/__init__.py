"""Example orders service: use cases write orders, the outbox relays their events."""
