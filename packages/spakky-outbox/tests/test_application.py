"""A real Spakky application with the outbox plugin loaded through its entry points."""

import json
import os
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from memory_app import build_app, running
from outbox_testapp.service import HANDLED, PlaceOrderUseCase
from spakky.core.application.application import SpakkyApplication
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.error import (
    InvalidOutboxConfigError,
    OutboxSerializationError,
    OutboxStorageNotFoundError,
)
from spakky.outbox.relay.relay import (
    AsyncOutboxRelayBackgroundService,
    OutboxRelayBackgroundService,
)
from spakky.outbox.testing.memory import InMemoryOutboxState
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordingEventTransport,
)
from spakky.outbox.testing.waiting import wait_for
from spakky_outbox_testservices.environ import scoped_environ


@pytest.fixture
def fast_env() -> Iterator[None]:
    """Poll quickly so end-to-end waits are short."""
    with scoped_environ({"SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05"}):
        yield


def run[T](app: SpakkyApplication, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the application's event loop thread."""
    return app.application_context.get(ApplicationEventLoop).run(coroutine, timeout=10)


def test_application_use_case_expect_integration_event_relayed_and_domain_event_handled(
    fast_env: None,
) -> None:
    """A committed use case's integration event is stored then relayed; the domain event is handled, never stored."""
    app = build_app().start()
    try:
        context = app.application_context
        use_case = context.get(PlaceOrderUseCase)
        transport = context.get(AsyncRecordingEventTransport)
        state = context.get(InMemoryOutboxState)
        HANDLED.clear()
        run(app, use_case.execute("o-1", "c-1"))
        assert state.business == {"order:o-1": "c-1"}
        assert [r.message.event_name for r in state.records.values()] == ["OrderPlaced"]
        assert HANDLED == ["o-1"]
        delivered = wait_for(lambda: transport.delivered, timeout=10)
        assert [(d.event_name, d.partition_key) for d in delivered] == [("OrderPlaced", "c-1")]
        assert json.loads(delivered[0].payload)["order_id"] == "o-1"
        assert "authorization" not in {k.lower() for k in delivered[0].headers}
        assert isinstance(context.get(AsyncOutboxRelayBackgroundService), AsyncOutboxRelayBackgroundService)
        assert not context.contains(OutboxRelayBackgroundService)
    finally:
        app.stop()


@pytest.fixture
def app(fast_env: None) -> Iterator[SpakkyApplication]:
    """The in-memory application with the test service, started for the test."""
    with running(build_app()) as started:
        yield started


def test_application_rolled_back_use_case_expect_nothing_stored(app: SpakkyApplication) -> None:
    """A use case that fails after publishing stores neither business data nor event."""
    state = app.application_context.get(InMemoryOutboxState)
    with pytest.raises(RuntimeError):
        run(app, app.application_context.get(PlaceOrderUseCase).execute("o-2", "c", fail=True))
    assert state.business == {} and state.records == {}


def test_application_unserialisable_event_expect_our_error_and_rollback(app: SpakkyApplication) -> None:
    """An unserialisable field fails the publish with our error naming type and field; nothing is kept."""
    state = app.application_context.get(InMemoryOutboxState)
    with pytest.raises(OutboxSerializationError) as caught:
        run(app, app.application_context.get(PlaceOrderUseCase).execute("o-3", "c", bad=True))
    assert "BadEvent.blob" in str(caught.value)
    assert state.business == {} and state.records == {}


def test_application_relay_sync_expect_only_sync_relay(fast_env: None) -> None:
    """``SPAKKY_OUTBOX__RELAY=sync`` runs the thread relay and no async one."""
    os.environ["SPAKKY_OUTBOX__RELAY"] = "sync"
    with running(build_app()) as app:
        context = app.application_context
        assert context.contains(OutboxRelayBackgroundService)
        assert not context.contains(AsyncOutboxRelayBackgroundService)
        run(app, context.get(PlaceOrderUseCase).execute("o-4", "c-4"))
        delivered = wait_for(lambda: context.get(RecordingEventTransport).delivered, timeout=10)
        assert [d.event_name for d in delivered] == ["OrderPlaced"]


def test_application_relay_off_expect_no_relay(fast_env: None) -> None:
    """``SPAKKY_OUTBOX__RELAY=off`` stores events but runs no relay."""
    os.environ["SPAKKY_OUTBOX__RELAY"] = "off"
    with running(build_app()) as app:
        context = app.application_context
        assert not context.contains(OutboxRelayBackgroundService)
        assert not context.contains(AsyncOutboxRelayBackgroundService)
        run(app, context.get(PlaceOrderUseCase).execute("o-5", "c-5"))
        assert len(context.get(InMemoryOutboxState).records) == 1


def test_application_no_storage_expect_error_naming_package() -> None:
    """Without any storage, startup fails naming the package to install."""
    with pytest.raises(OutboxStorageNotFoundError) as caught:
        build_app(storage=False).start()
    assert "spakky-outbox[postgres]" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SPAKKY_OUTBOX__BATCH_SIZE", "abc"),
        ("SPAKKY_OUTBOX__BATCH_SIZE", "0"),
        ("SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS", "-1"),
        ("SPAKKY_OUTBOX__RELAY", "both"),
    ],
)
def test_application_bad_setting_expect_startup_error_naming_variable(
    fast_env: None, variable: str, value: str
) -> None:
    """A bad setting fails startup with our error naming the variable and value."""
    os.environ[variable] = value
    with pytest.raises(InvalidOutboxConfigError) as caught:
        build_app()
    assert variable in str(caught.value) and repr(value) in str(caught.value)


def test_config_defaults_expect_8_5_values(fast_env: None) -> None:
    """The 8.5 settings keep their names and defaults."""
    del os.environ["SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS"]
    config = OutboxConfig()
    assert (
        config.polling_interval_seconds,
        config.batch_size,
        config.max_retry_count,
        config.claim_timeout_seconds,
    ) == (1.0, 100, 5, 300.0)
