"""Fixtures of the examples' tests: the worked example's harness and the core's wheel."""

from pathlib import Path

import pytest

from examples.custom_backend.harness import ListOutboxHarness
from tests.examples.venvs import build_wheel


@pytest.fixture
def outbox_harness() -> ListOutboxHarness:
    """A fresh example database per test (the conformance run of the worked example)."""
    return ListOutboxHarness()


@pytest.fixture(scope="session")
def core_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of ``spakky-outbox``, built once per session."""
    return build_wheel("spakky-outbox", tmp_path_factory.mktemp("wheels"))
