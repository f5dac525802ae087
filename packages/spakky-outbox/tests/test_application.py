"""A real Spakky application with the outbox plugin loaded through its entry points."""

import asyncio
import json
import os
from collections.abc import Iterator

import outbox_testapp as app_package
import pytest
from outbox_testapp.service import HANDLED, PlaceOrderUseCase
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
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
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    AsyncInMemoryTransaction,
    InMemoryOutboxState,
    InMemoryOutboxStorage,
    InMemoryTransaction,
)
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordingEventTransport,
)
from spakky.outbox.testing.waiting import wait_for

CORE_PLUGINS = {
    Plugin(name=n)
    for n in ("spakky-data", "spakky-domain", "spakky-event", "spakky-tracing", "spakky-outbox")
}


def build_app(*, storage: bool = True) -> SpakkyApplication:
    """Load the core plugins, register the in-memory storage and scan the service."""
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=CORE_PLUGINS)
    app.add(InMemoryOutboxState)
    app.add(InMemoryTransaction)
    app.add(AsyncInMemoryTransaction)
    if storage:
        app.add(InMemoryOutboxStorage)
        app.add(AsyncInMemoryOutboxStorage)
    app.add(RecordingEventTransport)
    app.add(AsyncRecordingEventTransport)
    return app.scan(app_package)


@pytest.fixture
def fast_env() -> Iterator[None]:
    """Poll quickly so end-to-end waits are short."""
    saved = dict(os.environ)
    os.environ["SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS"] = "0.05"
    yield
    os.environ.clear()
    os.environ.update(saved)


def run(app: SpakkyApplication, coroutine: object) -> object:
    """Run a coroutine on the application's event loop thread."""
    loop = app.application_context._ApplicationContext__event_loop  # type: ignore[attr-defined]
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(10)  # type: ignore[arg-type]


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


def test_application_rolled_back_use_case_expect_nothing_stored(fast_env: None) -> None:
    """A use case that fails after publishing stores neither business data nor event."""
    app = build_app().start()
    try:
        state = app.application_context.get(InMemoryOutboxState)
        with pytest.raises(RuntimeError):
            run(app, app.application_context.get(PlaceOrderUseCase).execute("o-2", "c", fail=True))
        assert state.business == {} and state.records == {}
    finally:
        app.stop()


def test_application_unserialisable_event_expect_our_error_and_rollback(fast_env: None) -> None:
    """An unserialisable field fails the publish with our error naming type and field; nothing is kept."""
    app = build_app().start()
    try:
        state = app.application_context.get(InMemoryOutboxState)
        with pytest.raises(OutboxSerializationError) as caught:
            run(app, app.application_context.get(PlaceOrderUseCase).execute("o-3", "c", bad=True))
        assert "BadEvent.blob" in str(caught.value)
        assert state.business == {} and state.records == {}
    finally:
        app.stop()


def test_application_relay_sync_expect_only_sync_relay(fast_env: None) -> None:
    """``SPAKKY_OUTBOX__RELAY=sync`` runs the thread relay and no async one."""
    os.environ["SPAKKY_OUTBOX__RELAY"] = "sync"
    app = build_app().start()
    try:
        context = app.application_context
        assert context.contains(OutboxRelayBackgroundService)
        assert not context.contains(AsyncOutboxRelayBackgroundService)
        run(app, context.get(PlaceOrderUseCase).execute("o-4", "c-4"))
        delivered = wait_for(lambda: context.get(RecordingEventTransport).delivered, timeout=10)
        assert [d.event_name for d in delivered] == ["OrderPlaced"]
    finally:
        app.stop()


def test_application_relay_off_expect_no_relay(fast_env: None) -> None:
    """``SPAKKY_OUTBOX__RELAY=off`` stores events but runs no relay."""
    os.environ["SPAKKY_OUTBOX__RELAY"] = "off"
    app = build_app().start()
    try:
        context = app.application_context
        assert not context.contains(OutboxRelayBackgroundService)
        assert not context.contains(AsyncOutboxRelayBackgroundService)
        run(app, context.get(PlaceOrderUseCase).execute("o-5", "c-5"))
        assert len(context.get(InMemoryOutboxState).records) == 1
    finally:
        app.stop()


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
