"""Fixtures for the core package's tests."""

import os
from collections.abc import Iterator

import pytest


@pytest.fixture
def outbox_env() -> Iterator[dict[str, str]]:
    """Set ``SPAKKY_OUTBOX__*`` variables for one test and restore them afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SPAKKY_")}
    values: dict[str, str] = {}
    yield values
    for key in [k for k in os.environ if k.startswith("SPAKKY_")]:
        del os.environ[key]
    os.environ.update(saved)
