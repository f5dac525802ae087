"""Runs the conformance suite on the worked example of docs/writing-a-backend.md."""

import pytest

from examples.custom_backend.harness import ListOutboxHarness


@pytest.fixture
def outbox_harness() -> ListOutboxHarness:
    """A fresh example database per test."""
    return ListOutboxHarness()
