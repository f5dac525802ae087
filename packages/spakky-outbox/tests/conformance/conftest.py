"""The in-memory reference storage under the conformance suite."""

import pytest
from spakky.outbox.testing.memory import InMemoryOutboxHarness


@pytest.fixture
def outbox_harness() -> InMemoryOutboxHarness:
    """A fresh in-memory outbox on a manual clock."""
    return InMemoryOutboxHarness()
