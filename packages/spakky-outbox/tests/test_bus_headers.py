"""What the outbox bus stores as headers: the trace context, never a credential."""

import pytest
from outbox_testapp.service import OrderPlaced
from spakky.outbox.bus.outbox_event_bus import AsyncOutboxEventBus, OutboxEventBus
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    AsyncInMemoryTransaction,
    InMemoryOutboxState,
    InMemoryOutboxStorage,
    InMemoryTransaction,
)
from spakky.tracing.propagator import ITracePropagator

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class CopyingPropagator(ITracePropagator):
    """A propagator that copies whatever the incoming request carried, as some middlewares do."""

    def __init__(self, extra: dict[str, str]) -> None:
        self.extra = extra

    def inject(self, carrier: dict[str, str]) -> None:
        carrier["traceparent"] = TRACEPARENT
        carrier.update(self.extra)

    def extract(self, carrier: dict[str, str]) -> None:
        return None

    def fields(self) -> list[str]:
        return ["traceparent"]


CREDENTIALS = [
    {"Authorization": "Bearer tok"},
    {"authorization": "bearer\ttok"},
    {"Authorization": "   Bearer tok"},
    {"AUTHORIZATION": "BEARER tok"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Proxy-Authorization": "Bearer tok"},
    {"X-Forwarded-Authorization": "Bearer tok"},
    {"x_forwarded_authorization": "bearer tok"},
    {" Authorization ": "Bearer tok"},
    {"X-Upstream-Token": "Bearer tok"},
]


@pytest.mark.parametrize("extra", CREDENTIALS, ids=lambda h: repr(h))
async def test_bus_credential_header_expect_dropped_and_trace_kept(extra: dict[str, str]) -> None:
    """Every form of a credential header is dropped (sync and async bus); the trace context stays."""
    state = InMemoryOutboxState()
    config = OutboxConfig()
    with InMemoryTransaction(state):
        OutboxEventBus(InMemoryOutboxStorage(state, config), CopyingPropagator(extra)).send(
            OrderPlaced(order_id="o-1", customer_id="alice")
        )
    async with AsyncInMemoryTransaction(state):
        await AsyncOutboxEventBus(AsyncInMemoryOutboxStorage(state, config), CopyingPropagator(extra)).send(
            OrderPlaced(order_id="o-2", customer_id="alice")
        )
    stored = [r.message.headers for r in state.records.values()]
    assert stored == [{"traceparent": TRACEPARENT}] * 2


@pytest.mark.parametrize(
    "kept",
    [{"x-request-id": "r-1"}, {"baggage": "tenant=acme"}, {"x-note": "bearer"}, {"x-authorization-mode": "strict"}],
    ids=lambda h: repr(h),
)
def test_bus_plain_header_expect_kept(kept: dict[str, str]) -> None:
    """Headers that carry no credential are stored as they are."""
    state = InMemoryOutboxState()
    with InMemoryTransaction(state):
        OutboxEventBus(InMemoryOutboxStorage(state, OutboxConfig()), CopyingPropagator(kept)).send(
            OrderPlaced(order_id="o-1", customer_id="alice")
        )
    [record] = state.records.values()
    assert record.message.headers == {"traceparent": TRACEPARENT} | kept
