"""Worked example from docs/writing-a-backend.md: a minimal storage and its conformance run."""
