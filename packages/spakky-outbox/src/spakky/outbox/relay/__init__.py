"""Outbox relays: claim stored messages and hand them to the event transport."""
