"""What consumer.py scans: the event handlers of this consuming service."""
