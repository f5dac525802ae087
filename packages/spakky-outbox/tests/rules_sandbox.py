"""Run a rule suite of the testing kit in a pytester sandbox, against an in-memory reference broken on purpose."""

import textwrap

import pytest

SANDBOX_INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
"""The sandbox's pytest settings: async tests and fixtures as in this repository."""


def indented(source: str) -> str:
    """``source`` (methods written at any indentation) as the body of a class."""
    return textwrap.indent(textwrap.dedent(source).strip("\n"), "    ") + "\n"


def broken_state(override: str) -> str:
    """Source of ``Broken``: the in-memory state with ``override``'s methods in place of its own."""
    return (
        "from spakky.outbox.testing.memory_state import InboxEntry, InMemoryOutboxState\n\n\n"
        f"class Broken(InMemoryOutboxState):\n{indented(override)}\n"
    )


def run_rules(pytester: pytest.Pytester, conftest: str, suite: str, *, extra: str = "") -> pytest.RunResult:
    """Run every rule of the module ``suite`` (star-imported, then ``extra``) with ``conftest``'s harness fixture."""
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_rules=f"from {suite} import *  # noqa\n" + extra)
    pytester.makeini(SANDBOX_INI)
    return pytester.runpytest_inprocess("-q", "-rf", "-p", "no:cacheprovider")


def failed_names(result: pytest.RunResult) -> set[str]:
    """Names of the rules that failed (on any flavour: an id such as ``[async]`` dropped)."""
    return {
        line.split("::")[1].split(" ")[0].split("[")[0]
        for line in result.outlines
        if line.startswith("FAILED ") and "::" in line
    }
