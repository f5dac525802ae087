"""`OutboxHealthCheck` in a real Spakky application (core plugins, in-memory outbox, recording transport)."""

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from cli_testapp import pods, store
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.relay.health import OutboxHealth, OutboxHealthCheck
from spakky.outbox.relay.relay import (
    AsyncOutboxRelayBackgroundService,
    OutboxRelayBackgroundService,
)
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    InMemoryOutboxStorage,
)
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordingEventTransport,
)
from spakky.outbox.testing.waiting import wait_for

CORE = {Plugin(name=n) for n in ("spakky-data", "spakky-domain", "spakky-event", "spakky-tracing", "spakky-outbox")}


@pytest.fixture
def app_env() -> Iterator[None]:
    """A fresh shared outbox, quick polling, and ``SPAKKY_*`` variables restored afterwards."""
    saved = dict(os.environ)
    os.environ["SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS"] = "0.02"
    store.reset()
    yield
    store.reset()
    os.environ.clear()
    os.environ.update(saved)


def start_app(relay: str) -> SpakkyApplication:
    """Start an application with the given ``SPAKKY_OUTBOX__RELAY`` over the shared outbox."""
    os.environ["SPAKKY_OUTBOX__RELAY"] = relay
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=CORE)
    app.add(AsyncRecordingEventTransport)
    app.add(RecordingEventTransport)
    return app.scan(pods).start()


def check(app: SpakkyApplication, **options: float) -> OutboxHealth:
    """Await the application's health check on its event loop."""
    health = app.application_context.get(OutboxHealthCheck)
    return app.application_context.get(ApplicationEventLoop).run(health.check(**options), timeout=10)


@pytest.mark.parametrize(
    ("mode", "relay_type"),
    [("async", AsyncOutboxRelayBackgroundService), ("sync", OutboxRelayBackgroundService)],
)
def test_health_relay_cycling_expect_healthy_then_unhealthy_once_stopped(
    app_env: None, mode: str, relay_type: type[AsyncOutboxRelayBackgroundService | OutboxRelayBackgroundService]
) -> None:
    """A relay finishing cycles is running; once it stops cycling, past the limit it is not."""
    app = start_app(mode)
    try:
        relay = app.application_context.get(relay_type)
        wait_for(lambda: relay.seconds_since_last_cycle is not None, timeout=10)
        health = check(app)
        assert health == OutboxHealth(
            healthy=True,
            storage_reachable=True,
            relay_running=True,
            seconds_since_last_cycle=health.seconds_since_last_cycle,
            oldest_pending_age_seconds=None,
        )
        if isinstance(relay, AsyncOutboxRelayBackgroundService):
            app.application_context.get(ApplicationEventLoop).run(relay.stop_async(), timeout=10)
        else:
            relay.stop()
        stale = wait_for(lambda: (h := check(app, relay_stale_after_seconds=0.05)).relay_running is False and h, timeout=10)
        assert stale.healthy is False and stale.storage_reachable is True
        [problem] = stale.problems
        assert problem.startswith("relay finished no cycle in the ") and problem.endswith("s since its last one (limit 0.05s)")
    finally:
        app.stop()


def test_health_relay_before_first_cycle_expect_counted_from_startup(app_env: None) -> None:
    """A relay that never finished a cycle is judged by the time since the check was created."""
    config = OutboxConfig()
    relay = AsyncOutboxRelayBackgroundService(
        AsyncInMemoryOutboxStorage(store.STATE, config),
        AsyncRecordingEventTransport(),
        config,
    )
    health_check = OutboxHealthCheck(config, relay=relay)
    assert asyncio.run(health_check.check()).relay_running is True
    stale = wait_for(lambda: (h := asyncio.run(health_check.check(relay_stale_after_seconds=0.01))).relay_running is False and h, timeout=10)
    assert stale.seconds_since_last_cycle is None
    assert stale.storage_reachable is None, "a check without storage reports no storage state"
    assert "since startup" in stale.problems[0]


def test_health_no_relay_and_old_backlog_expect_unhealthy_only_past_max_age(app_env: None) -> None:
    """Without a relay in the process only the storage and the backlog age are judged."""
    app = start_app("off")
    try:
        InMemoryOutboxStorage(store.STATE, OutboxConfig()).save(
            OutboxMessage(uuid4(), "Old", b"{}", {}, datetime.now(UTC) - timedelta(hours=1))
        )
        young_enough = check(app, max_pending_age_seconds=7200)
        assert young_enough.healthy and young_enough.relay_running is None
        assert young_enough.oldest_pending_age_seconds is not None
        assert 3600 <= young_enough.oldest_pending_age_seconds < 7200
        too_old = check(app, max_pending_age_seconds=60)
        assert not too_old.healthy and too_old.storage_reachable is True
        assert too_old.problems[0].startswith("oldest pending message is 36")
    finally:
        app.stop()


def test_health_default_relay_limit_expect_claim_timeout_plus_three_rests(app_env: None) -> None:
    """The default limit on a relay's silence is the claim timeout plus three of its longest rests."""
    os.environ.update(
        SPAKKY_OUTBOX__CLAIM_TIMEOUT_SECONDS="60", SPAKKY_OUTBOX__OUTAGE_BACKOFF_MAX_SECONDS="10"
    )
    assert OutboxHealthCheck(OutboxConfig()).relay_stale_after_seconds == 90
