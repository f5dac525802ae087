"""Workspace-wide hooks: the fault drills' and skip reasons' summaries.

The service fixtures (``postgres_url``, ``redis_url``, ...) come from the
``spakky_outbox_testservices.fixtures`` pytest plugin.
"""

from collections import Counter
from typing import Any

import pytest

_DRILL_LINES: list[str] = []
"""Fault-drill summary lines gathered from test reports (from pytest-xdist workers too)."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Gather the fault drills' lines (tests/faults) from teardown reports."""
    if report.when == "teardown":
        _DRILL_LINES.extend(str(value) for name, value in report.user_properties if name == "fault_drill")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what each fault drill counted, and why tests were skipped (one line per reason)."""
    if _DRILL_LINES:
        terminalreporter.section("outbox fault injection")
        for line in sorted(_DRILL_LINES):
            terminalreporter.write_line(line)
    reasons = Counter(_skip_reason(report) for report in terminalreporter.stats.get("skipped", []))
    if reasons:
        terminalreporter.section("skip reasons")
        for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
            terminalreporter.write_line(f"{count:5d}  {reason}")


def _skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped test gave (``Skipped: `` removed)."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")
