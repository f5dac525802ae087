"""``OutboxConfig``: every value with a meaning accepted, costly ones warned about, nonsense refused."""

import json
import logging

import pytest
from memory_app import build_app
from outbox_testapp.service import PlaceOrderUseCase
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.error import InvalidOutboxConfigError
from spakky.outbox.relay.state import BatchOutcome, RelayPolicy
from spakky.outbox.testing.memory import AsyncInMemoryOutboxStorage
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordedEvent,
)
from spakky.outbox.testing.waiting import wait_for


class OutboxEnv:
    """Sets ``SPAKKY_OUTBOX__<name>`` for one test (``env["BATCH_SIZE"] = "0"``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch

    def __setitem__(self, name: str, value: str) -> None:
        self._monkeypatch.setenv(f"SPAKKY_OUTBOX__{name}", value)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> OutboxEnv:
    """Outbox variables for one test, restored afterwards."""
    return OutboxEnv(monkeypatch)


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("POLLING_INTERVAL_SECONDS", "0", 0.0),
        ("POLLING_INTERVAL_SECONDS", "1e-6", 1e-6),
        ("BATCH_SIZE", "100000", 100_000),
        ("BATCH_MAX_BYTES", "1024", 1024),
        ("BATCHES_IN_FLIGHT", "16", 16),
        ("MAX_RETRY_COUNT", "0", 1),
        ("MAX_RETRY_COUNT", "1", 1),
        ("CLAIM_TIMEOUT_SECONDS", "0.5", 0.5),
        ("CLAIM_LEASE_SECONDS", "1", 1.0),
        ("PUBLISHED_RETENTION_SECONDS", "0", 0.0),
        ("FIGURES_INTERVAL_SECONDS", "0", 0.0),
        ("FIGURES_INTERVAL_SECONDS", "1", 1.0),
    ],
)
def test_config_meaningful_value_expect_accepted(
    env: OutboxEnv, name: str, value: str, read: float
) -> None:
    """Values 8.5 accepted with a meaning are read (MAX_RETRY_COUNT=0 as 1: abandon at the first refusal)."""
    env[name] = value
    assert OutboxConfig().model_dump()[name.lower()] == read


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("POLLING_INTERVAL_SECONDS", "-1", "must be 0 or more seconds (0: claim again without pausing)"),
        ("POLLING_INTERVAL_SECONDS", "inf", "Input should be a finite number"),
        ("BATCH_SIZE", "0", "must be at least 1: a relay claiming no message delivers nothing (SPAKKY_OUTBOX__RELAY=off"),
        ("BATCH_MAX_BYTES", "100", "must be at least 1024 bytes: the payload bytes one claim may hold"),
        ("BATCHES_IN_FLIGHT", "0", "must be 1 to 16: the batches one async relay works on at once"),
        ("BATCHES_IN_FLIGHT", "17", "must be 1 to 16: the batches one async relay works on at once"),
        ("MAX_RETRY_COUNT", "-1", "must be 0 or more (0 or 1: abandon a message at its first refusal)"),
        ("CLAIM_TIMEOUT_SECONDS", "0", "must be more than 0 seconds: a claim that lasts no time"),
        ("CLAIM_LEASE_SECONDS", "0.0001", "must be at least 1 second: a relay renews its claims every third"),
        ("FIGURES_INTERVAL_SECONDS", "0.5", "must be 0 (write no figures) or at least 1 second"),
        ("FIGURES_INTERVAL_SECONDS", "-1", "must be 0 (write no figures) or more seconds (default 10)"),
    ],
)
def test_config_meaningless_value_expect_value_error_naming_variable_and_why(
    env: OutboxEnv, name: str, value: str, reason: str
) -> None:
    """A value without a meaning is refused with a ValueError that names the variable, the value and why."""
    env[name] = value
    with pytest.raises(ValueError, match="Invalid outbox configuration") as raised:
        OutboxConfig()
    assert isinstance(raised.value, InvalidOutboxConfigError)
    text = str(raised.value)
    assert f"SPAKKY_OUTBOX__{name}={value!r}: {reason}" in text
    assert "Value error," not in text


@pytest.mark.parametrize(
    ("name", "value", "warning"),
    [
        ("POLLING_INTERVAL_SECONDS", "0", "POLLING_INTERVAL_SECONDS=0: an idle relay claims again without pausing"),
        ("POLLING_INTERVAL_SECONDS", "1e-6", "POLLING_INTERVAL_SECONDS=1e-06: an idle relay claims again after 1e-06 s"),
        ("BATCH_SIZE", "100000", "BATCH_SIZE=100000: one claim of that many messages holds the storage"),
    ],
)
def test_application_costly_setting_expect_one_startup_warning(
    env: OutboxEnv, caplog: pytest.LogCaptureFixture, name: str, value: str, warning: str
) -> None:
    """A costly but meaningful value starts the application and logs one warning naming it."""
    env[name] = value
    with caplog.at_level(logging.WARNING, logger="spakky.outbox"):
        build_app()
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("spakky.outbox")]
    assert len(warnings) == 1 and warning in warnings[0], warnings


def test_application_costly_setting_without_relay_expect_no_warning(
    env: OutboxEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """A process that runs no relay is not warned about relay settings."""
    env["POLLING_INTERVAL_SECONDS"] = "0"
    env["RELAY"] = "off"
    with caplog.at_level(logging.WARNING, logger="spakky.outbox"):
        build_app()
    assert [r for r in caplog.records if r.name.startswith("spakky.outbox")] == []


def test_relay_max_retry_count_zero_expect_abandoned_at_first_refusal_and_key_goes_on(
    env: OutboxEnv,
) -> None:
    """MAX_RETRY_COUNT=0: the refused order is abandoned at its first refusal and the customer's next order is delivered."""
    env["MAX_RETRY_COUNT"] = "0"
    env["POLLING_INTERVAL_SECONDS"] = "0.05"
    app = build_app().start()
    try:
        context = app.application_context
        transport = context.get(AsyncRecordingEventTransport)
        refused: list[str] = []

        def refuse_first(record: RecordedEvent) -> bool:
            if refused:
                return False
            refused.append("o-1")
            return True

        transport.faults.refuse = refuse_first
        loop = context.get(ApplicationEventLoop)
        use_case = context.get(PlaceOrderUseCase)
        loop.run(use_case.execute("o-1", "alice"))
        loop.run(use_case.execute("o-2", "alice"))
        storage = context.get(AsyncInMemoryOutboxStorage)
        settled = wait_for(lambda: (stats := loop.run(storage.stats())).pending == 0 and stats, timeout=10)
        assert (settled.abandoned, settled.published) == (1, 1)
        assert [json.loads(d.payload)["order_id"] for d in transport.delivered] == ["o-2"]
        assert refused == ["o-1"]
        [abandoned] = loop.run(storage.list_abandoned(10))
        assert json.loads(abandoned.payload)["order_id"] == "o-1"
    finally:
        app.stop()


def test_relay_policy_polling_zero_expect_no_idle_pause_but_outage_backoff(env: OutboxEnv) -> None:
    """POLLING_INTERVAL_SECONDS=0: an idle relay claims again at once, but an outage still backs off from 0.1 s."""
    env["POLLING_INTERVAL_SECONDS"] = "0"
    policy = RelayPolicy(OutboxConfig(), None)
    assert policy.idle_delay(BatchOutcome(claimed=0)) == 0.0
    outage = [policy.idle_delay(BatchOutcome(outage=True)) for _ in range(4)]
    assert 0.05 <= outage[0] <= 0.1 and outage[3] >= 0.4, outage
