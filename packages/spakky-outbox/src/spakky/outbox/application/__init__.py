"""Calling into a started Spakky application from the application's own code."""
