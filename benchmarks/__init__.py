"""Benchmarks of spakky-outbox beside the published spakky-outbox 8.5.0 (`make bench`)."""
