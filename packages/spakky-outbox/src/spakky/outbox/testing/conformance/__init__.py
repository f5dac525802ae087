"""The storage conformance suite: the executable specification of the storage port.

A backend runs it with one fixture and one line. Its ``conftest.py`` provides
an ``outbox_harness`` fixture yielding an `AbstractOutboxHarness` for a fresh,
isolated store, and its test module is::

    from spakky.outbox.testing.conformance import *  # noqa: F403

Tests for a capability the harness does not declare are skipped with the
capability's name; a declared one must really work. Removing or redefining a
suite test without ``@pytest.mark.xfail(reason=...)`` fails the run. The
``spakky-outbox`` pytest plugin prints the conformance level reached.

The rules live in one module per capability (`save`, `claims`,
`partition_ordering`, ...); the capability -> port table is
`spakky.outbox.testing.harness.CAPABILITY_PORTS`; a new capability's rules go in
a module of their own, star-imported here.

Every assertion names the rule it checks and what the storage did. Messages
are labelled by their event name (``m1``, ``m2``, ... or a role such as
``head``), which is what failures print.
"""

import sys
from types import ModuleType
from typing import Any, cast

import pytest

from .administration import *
from .batch_acknowledgement import *
from .byte_budget import *
from .claims import *
from .flavours import outbox_flavour, outbox_harness
from .key_spreading import *
from .liveness import *
from .partition_ordering import *
from .relay_figures import *
from .retry_scheduling import *
from .save import *
from .support import conformance_guard, rule
from .sync_api import *
from .wake_up import *


async def test_conformance_suite_complete_expect_no_shadowed_tests(
    request: pytest.FixtureRequest,
) -> None:
    """Every suite test is present unchanged, or replaced with an explicit xfail reason."""
    module = cast(ModuleType, request.module)
    suite = sys.modules[__name__]
    problems: list[str] = []
    for name in SUITE_TESTS:
        original = getattr(suite, name)
        current: Any = getattr(module, name, None)
        if current is original:
            continue
        marks = getattr(current, "pytestmark", [])
        if not any(mark.name == "xfail" and mark.kwargs.get("reason") for mark in marks):
            problems.append(f"{name} is {'removed' if current is None else 'redefined'} without xfail(reason=...)")
    assert problems == [], rule("suite tests are run as shipped", problems)


SUITE_TESTS: tuple[str, ...] = tuple(
    name for name in dir(sys.modules[__name__])
    if name.startswith("test_") and name != "test_conformance_suite_complete_expect_no_shadowed_tests"
)
"""Names of every test the suite defines."""


__all__ = [  # pyright: ignore[reportUnsupportedDunderAll] - the suite's tests are listed by name
    "conformance_guard",
    "outbox_flavour",
    "outbox_harness",
    "test_conformance_suite_complete_expect_no_shadowed_tests",
    *SUITE_TESTS,
]
