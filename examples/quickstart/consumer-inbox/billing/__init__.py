"""The billing service: what consumer.py scans (its event handler and its table)."""
