"""Which transport the relay sends through: ours when ``SPAKKY_OUTBOX__DELIVERY`` names it, else the app's."""

from collections.abc import Iterator

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.event.event_publisher import IAsyncEventTransport, IEventTransport
from spakky.outbox.delivery import registry
from spakky.outbox.delivery.rabbitmq.transport import (
    AsyncRabbitMQOutboxTransport,
    RabbitMQOutboxTransport,
)
from spakky.outbox.error import (
    InvalidOutboxConfigError,
    OutboxDeliveryNotInstalledError,
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
from spakky.plugins.rabbitmq.event.transport import (
    AsyncRabbitMQEventTransport,
    RabbitMQEventTransport,
)

from tests.e2e.common import rabbitmq_env

PLUGINS = {
    Plugin(name=n)
    for n in ("spakky-data", "spakky-domain", "spakky-event", "spakky-tracing", "spakky-outbox", "spakky-rabbitmq")
}


@pytest.fixture
def env(rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """spakky-rabbitmq and our adapter pointed at the test RabbitMQ."""
    for name, value in rabbitmq_env(rabbitmq_url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SPAKKY_OUTBOX_RABBITMQ__URL", rabbitmq_url)
    yield monkeypatch


def _app() -> SpakkyApplication:
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=PLUGINS)
    for pod in (InMemoryOutboxState, InMemoryTransaction, AsyncInMemoryTransaction, InMemoryOutboxStorage, AsyncInMemoryOutboxStorage):
        app.add(pod)
    return app


@pytest.mark.parametrize(
    ("delivery", "relay", "expected"),
    [
        ("rabbitmq", "async", AsyncRabbitMQOutboxTransport),
        ("rabbitmq", "sync", RabbitMQOutboxTransport),
        (None, "async", AsyncRabbitMQEventTransport),
        (None, "sync", RabbitMQEventTransport),
    ],
)
def test_delivery_selection_beside_spakky_rabbitmq_expect_relay_sends_through_the_chosen_transport(
    env: pytest.MonkeyPatch, delivery: str | None, relay: str, expected: type
) -> None:
    """spakky-rabbitmq's transports are registered too: the setting decides which one the relay gets."""
    if delivery is not None:
        env.setenv("SPAKKY_OUTBOX__DELIVERY", delivery)
    env.setenv("SPAKKY_OUTBOX__RELAY", relay)
    app = _app().start()
    try:
        context = app.application_context
        port, service = (
            (IAsyncEventTransport, AsyncOutboxRelayBackgroundService) if relay == "async"
            else (IEventTransport, OutboxRelayBackgroundService)
        )
        assert type(context.get(port)) is expected
        assert type(context.get(service)._transport) is expected
    finally:
        app.stop()


def test_delivery_selection_relay_off_expect_no_adapter_but_settings_checked(env: pytest.MonkeyPatch) -> None:
    """A write-only process (relay off) gets no adapter, yet a bad adapter setting still fails its start, naming the variable."""
    env.setenv("SPAKKY_OUTBOX__DELIVERY", "rabbitmq")
    env.setenv("SPAKKY_OUTBOX__RELAY", "off")
    app = _app().start()
    try:
        assert type(app.application_context.get(IAsyncEventTransport)) is AsyncRabbitMQEventTransport
    finally:
        app.stop()
    env.setenv("SPAKKY_OUTBOX_RABBITMQ__URL", "rabbit://mq/")
    with pytest.raises(InvalidOutboxConfigError, match="SPAKKY_OUTBOX_RABBITMQ__URL='rabbit://mq/'"):
        _app()


def test_delivery_selection_client_missing_expect_install_hint(env: pytest.MonkeyPatch) -> None:
    """Without the adapter's client library (here: made unfindable) the app does not start, and the error names the extra."""
    env.setenv("SPAKKY_OUTBOX__DELIVERY", "kafka")
    env.setattr(registry, "find_spec", lambda name: None)
    with pytest.raises(OutboxDeliveryNotInstalledError, match=r'pip install "spakky-outbox\[kafka\]"'):
        _app()
