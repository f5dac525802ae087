"""Pytest plugin (entry point ``pytest11``): prints the conformance level reached.

Loaded automatically wherever ``spakky-outbox`` is installed; it only acts on
tests that come from `spakky.outbox.testing.conformance` (its rule modules).
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from spakky.outbox.testing.harness import BASE_CAPABILITIES, SYNC_SHARED, Capability

_SUITE_MODULE = "spakky.outbox.testing.conformance"


@dataclass
class _Tally:
    passed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    leaked: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sync_undeclared: int = 0
    """Skips of a sync run because the harness does not declare ``SYNC_API``."""
    sync_shared: int = 0
    """Skips of a sync run whose storage another harness's sync run covers."""


_RESULTS = pytest.StashKey[dict[str, _Tally]]()
"""Per-session tallies, kept on the config so nested (pytester) sessions stay apart."""

_SESSIONS: list[pytest.Config] = []
"""Configs of the sessions running in this process, innermost last (pytester nests them)."""

CAPABILITY_MARK = "spakky_outbox_capability"
"""Marker a suite test carries naming the capability it needs (see `conformance.support.capability`)."""

BACKEND = pytest.StashKey[str]()
"""On a suite test's item: the name of the harness it runs on."""

FLAVOUR = pytest.StashKey[str]()
"""On a suite test's item: the flavour (``async``, ``sync``) of its run."""

LEAK = pytest.StashKey[str]()
"""On a suite test's item: what the harness's leak check found after it."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the suite's marker; track the running session, so reports are tallied into the right one."""
    config.addinivalue_line("markers", f"{CAPABILITY_MARK}(capability): the capability a suite test needs")
    _SESSIONS.append(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Forget a finished session."""
    if config in _SESSIONS:
        _SESSIONS.remove(config)


def _backend_of(item: pytest.Item) -> str:
    """Name a backend by its harness's ``name``, the backend's parameter id and the flavour.

    The async run keeps the plain name (``redis[single]``); the sync run of the
    same rules says so (``redis[single] sync``).
    """
    name = item.stash.get(BACKEND, "") or item.path.parent.name
    flavour = item.stash.get(FLAVOUR, "")
    # pytest gives a Function a callspec only when it is parametrized
    callspec: Any = getattr(item, "callspec", None)
    ids = "" if callspec is None else str(callspec.id)
    if flavour and (ids == flavour or ids.endswith(f"-{flavour}")):
        ids = ids[: -len(flavour)].rstrip("-")
    label = f"{name}[{ids}]" if ids else name
    return f"{label} sync" if flavour == "sync" else label


_SYNC_UNDECLARED = "(the sync flavour)"
"""What the suite's skip of an undeclared sync run says (`spakky.outbox.testing.conformance.flavours`)."""

_PROPERTY = "spakky_outbox_conformance"
"""Name of the report property carrying (backend, capability, leaked)."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Label each suite test's report with its backend and capability.

    The label travels with the report, so the tally (`pytest_runtest_logreport`)
    also works where reports come from other processes (pytest-xdist).
    """
    outcome = cast(Any, (yield))
    report = cast(pytest.TestReport, outcome.get_result())
    if not isinstance(item, pytest.Function):
        return
    function = cast(Callable[..., object], item.function)  # pytest types it loosely
    module = function.__module__
    if not (module == _SUITE_MODULE or module.startswith(f"{_SUITE_MODULE}.")):
        return
    mark = item.get_closest_marker(CAPABILITY_MARK)
    capability = "base" if mark is None else mark.args[0]
    leaked = bool(item.stash.get(LEAK, ""))
    report.user_properties.append((_PROPERTY, (_backend_of(item), str(capability), leaked)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Tally a labelled suite report by backend and capability."""
    label = next((value for name, value in report.user_properties if name == _PROPERTY), None)
    if label is None:
        return
    backend, capability, leaked = cast(tuple[str, str, bool], label)
    tally = _SESSIONS[-1].stash.setdefault(_RESULTS, defaultdict(_Tally))[backend]
    if report.skipped and report.when in ("setup", "call"):
        tally.skipped[capability] += 1
        tally.sync_undeclared += _SYNC_UNDECLARED in str(report.longrepr)
        tally.sync_shared += SYNC_SHARED in str(report.longrepr)
    elif report.failed and report.when == "teardown" and leaked:
        tally.leaked[capability] += 1
    elif report.failed:
        tally.failed[capability] += 1
    elif report.when == "call" and report.passed:
        tally.passed[capability] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print one conformance line per backend run in this session."""
    empty: dict[str, _Tally] = {}
    results = cast(pytest.Config, terminalreporter.config).stash.get(_RESULTS, empty)
    if not results:
        return
    terminalreporter.section("spakky-outbox storage conformance")
    for backend, tally in sorted(results.items()):
        terminalreporter.write_line(f"{backend}: {_verdict(tally)}")


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{capability} ({n})" for capability, n in sorted(counts.items()) if n)


def _verdict(tally: _Tally) -> str:
    """One backend's level, what failed, what leaked, and what its level leaves out."""
    passed = sum(tally.passed.values())
    failed = {c: n for c, n in tally.failed.items() if n}
    leaked = {c: n for c, n in tally.leaked.items() if n}
    if passed == 0 and not failed and not leaked:
        if tally.sync_undeclared and tally.sync_undeclared == sum(tally.skipped.values()):
            return f"NOT RUN - no sync flavour ({Capability.SYNC_API} not declared)"
        if tally.sync_shared and tally.sync_shared == sum(tally.skipped.values()):
            return "NOT RUN here - the same sync storage runs under another backend's sync line"
        return "NOT RUN - every test skipped (see skip reasons)"
    base_ok = tally.passed["base"] > 0 and not any(
        str(c) in failed or str(c) in leaked for c in (*BASE_CAPABILITIES, "base")
    )
    extended = [
        str(c) for c in Capability
        if c not in BASE_CAPABILITIES and tally.passed[str(c)] > 0
        and str(c) not in failed and str(c) not in leaked
    ]
    total_extended = len(Capability) - len(BASE_CAPABILITIES)
    if base_ok and len(extended) == total_extended and not failed and not leaked:
        level = "FULL"
    else:
        level = "BASE" if base_ok else "NOT CONFORMANT"
    line = (
        f"{level} - {passed} passed, extended {len(extended)}/{total_extended}"
        f" ({', '.join(extended) or 'none'})"
    )
    if failed:
        line += f"; failing: {_listing(failed)}"
    if leaked:
        line += f"; LEAKS (a connection or session left open after the test): {_listing(leaked)}"
    if base_ok and str(Capability.PARTITION_ORDERING) not in extended:
        line += "; no partition ordering: a key's messages may be relayed out of order"
    return line
