"""Test kit: conformance suite, in-memory reference storage, recording transport.

Importing this package does not import pytest; only the suite module does.
"""
