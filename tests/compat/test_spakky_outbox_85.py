"""Drop-in for 8.5 apps: what application code observes, pinned against the published 8.5.0.

`tests/compat/probes.py` does what 8.5 application code does (subclass the
outbox error, read the settings, publish an event that cannot be serialised)
and prints what it saw. It runs twice: in a fresh venv with the published
spakky-outbox 8.5.0, where it must see `PUBLISHED_85` (so the pins are what
8.5.0 really does), and in this workspace, where it must see the same, except
for the few values `OURS_DIFFER` lists with the reason: each is a setting 8.5.0
took without a meaning (a batch of 0 messages, a negative interval), which we
refuse with an error naming the variable, still a `ValueError` as 8.5.0's was.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.examples.venvs import clean_env, fresh_venv, install

PROBES = Path(__file__).with_name("probes.py")

PUBLISHED_85: dict[str, Any] = {
    "error_subclass_one_argument": {"args": ["detail"], "str": "detail", "repr": "AppError('detail')"},
    "error_subclass_no_argument": {"args": [], "str": "", "repr": "AppError()"},
    "error_subclass_two_arguments": {
        "args": ["order o-1", 409], "str": "('order o-1', 409)", "repr": "AppError('order o-1', 409)",
    },
    "error_subclass_with_message_and_argument": {
        "args": ["detail"], "str": "detail", "repr": "AppMessageError('detail')",
        "message": "Order could not be placed",
    },
    "error_subclass_with_message_no_argument": {"args": [], "str": "", "repr": "AppMessageError()"},
    "error_subclass_own_constructor": {
        "args": ["order o-1: out of stock"], "str": "order o-1: out of stock",
        "repr": "AppInitError('order o-1: out of stock')",
    },
    "error_subclass_pickled": {
        "args": ["order o-1", 409], "str": "('order o-1', 409)", "repr": "AppError('order o-1', 409)",
    },
    "error_subclass_caught_as": {"AbstractSpakkyOutboxError": True, "Exception": True},
    "settings_defaults": {
        "polling_interval_seconds": 1.0, "batch_size": 100, "max_retry_count": 5,
        "claim_timeout_seconds": 300.0,
    },
    "settings_values": {
        "POLLING_INTERVAL_SECONDS=0": {"value": 0.0},
        "POLLING_INTERVAL_SECONDS=0.5": {"value": 0.5},
        "POLLING_INTERVAL_SECONDS=1e-6": {"value": 1e-06},
        "POLLING_INTERVAL_SECONDS=-1": {"value": -1.0},
        "POLLING_INTERVAL_SECONDS=inf": {"value": float("inf")},
        "POLLING_INTERVAL_SECONDS=abc": {"ValueError": True},
        "BATCH_SIZE=1": {"value": 1},
        "BATCH_SIZE=100000": {"value": 100000},
        "BATCH_SIZE=0": {"value": 0},
        "BATCH_SIZE=-1": {"value": -1},
        "BATCH_SIZE=1.5": {"ValueError": True},
        "MAX_RETRY_COUNT=0": {"value": 0},
        "MAX_RETRY_COUNT=1": {"value": 1},
        "MAX_RETRY_COUNT=-1": {"value": -1},
        "CLAIM_TIMEOUT_SECONDS=0.5": {"value": 0.5},
        "CLAIM_TIMEOUT_SECONDS=0": {"value": 0.0},
        "CLAIM_TIMEOUT_SECONDS=-1": {"value": -1.0},
    },
    "unserialisable_event_sync": {
        "object field": {"ValueError": True, "saved": 0},
        "invalid utf-8 bytes": {"ValueError": True, "saved": 0},
    },
    "unserialisable_event_async": {
        "object field": {"ValueError": True, "saved": 0},
        "invalid utf-8 bytes": {"ValueError": True, "saved": 0},
    },
    "stored_headers": {"headers": ["traceparent"]},
}
"""What the probes see on spakky-outbox 8.5.0 (checked by `test_published_85_expect_pinned`)."""

REFUSED = {"ValueError": True}
OURS_DIFFER: dict[str, tuple[Any, str]] = {
    "POLLING_INTERVAL_SECONDS=-1": (REFUSED, "a negative pause has no meaning; 0 is 'no pause'"),
    "POLLING_INTERVAL_SECONDS=inf": (REFUSED, "8.5.0's async relay never polled again, its sync relay crashed"),
    "BATCH_SIZE=0": (REFUSED, "8.5.0 claimed nothing, forever; RELAY=off is how to run no relay"),
    "BATCH_SIZE=-1": (REFUSED, "no meaning (8.5.0 passed it to the storage's LIMIT)"),
    "MAX_RETRY_COUNT=0": (
        {"value": 1},
        "0 retries: abandoned at the first refusal, as with 1 (8.5.0 claimed nothing at all with 0)",
    ),
    "MAX_RETRY_COUNT=-1": (REFUSED, "no meaning (8.5.0 claimed nothing)"),
    "CLAIM_TIMEOUT_SECONDS=0": (REFUSED, "a claim lasting no time lets every relay take the same messages"),
    "CLAIM_TIMEOUT_SECONDS=-1": (REFUSED, "no meaning"),
}
"""Settings values this workspace reads otherwise than 8.5.0, with the reason."""


def cases(observations: dict[str, Any]) -> dict[str, Any]:
    """One case per probe, and one per settings value (``settings_values[BATCH_SIZE=0]``)."""
    flat = {k: v for k, v in observations.items() if k != "settings_values"}
    values = observations.get("settings_values", {})
    if not isinstance(values, dict) or "probe failed" in values:
        return flat | {"settings_values": values}
    return flat | {f"settings_values[{k}]": v for k, v in values.items()}


PINNED = cases(PUBLISHED_85)
EXPECTED_HERE = PINNED | {f"settings_values[{k}]": v for k, (v, _) in OURS_DIFFER.items()}
"""`PUBLISHED_85` with `OURS_DIFFER` applied: what the workspace must show."""


def observe(python: str | Path) -> dict[str, Any]:
    """Run every probe under ``python``, outside this workspace's import path."""
    result = subprocess.run(
        [str(python), str(PROBES)], capture_output=True, text=True, timeout=120,
        cwd=PROBES.parent, env=clean_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def published_85(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The probes' observations on the published spakky-outbox 8.5.0, in a fresh venv."""
    python = fresh_venv(tmp_path_factory.mktemp("spakky-outbox-85") / "venv")
    install(python, "spakky-outbox==8.5.0")
    return observe(python)


@pytest.fixture(scope="module")
def workspace() -> dict[str, Any]:
    """The probes' observations on this workspace."""
    return observe(sys.executable)


@pytest.mark.parametrize("case", sorted(PINNED))
def test_published_85_expect_pinned(published_85: dict[str, Any], case: str) -> None:
    """spakky-outbox 8.5.0 shows what this module pins (so the pins are real)."""
    assert cases(published_85).get(case) == PINNED[case]


@pytest.mark.parametrize("case", sorted(PINNED))
def test_workspace_expect_same_as_85(workspace: dict[str, Any], case: str) -> None:
    """This workspace shows what 8.5.0 shows, but for the listed meaningless settings values."""
    assert cases(workspace).get(case) == EXPECTED_HERE[case]


def test_workspace_differences_expect_only_meaningless_settings() -> None:
    """Every difference is a settings value, and each refusal is a ValueError as 8.5.0's errors were."""
    assert set(OURS_DIFFER) <= set(PUBLISHED_85["settings_values"])
    refused = [k for k, (v, _) in OURS_DIFFER.items() if v == REFUSED]
    assert all(PUBLISHED_85["settings_values"][k] != REFUSED for k in refused)
    assert all(reason for _, reason in OURS_DIFFER.values())
