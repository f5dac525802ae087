"""The shop: what service.py scans (its event and its use case)."""
