"""Run the example: ``make demo`` (or ``uv run python -m examples.orders``)."""

import asyncio
import os
import time

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.ports.storage import IAsyncOutboxAdministration, IAsyncOutboxStorage
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    AsyncInMemoryTransaction,
    InMemoryOutboxState,
    InMemoryOutboxStorage,
    InMemoryTransaction,
)

import examples.orders as orders_package
from examples.orders.domain import OrderRejectedError, PlaceOrderUseCase
from examples.orders.store import InMemoryOrderStore, IOrderStore
from examples.orders.transport import PrintingEventTransport, PrintingSyncEventTransport

PLUGINS = {
    Plugin(name=name)
    for name in ("spakky-data", "spakky-domain", "spakky-event", "spakky-tracing", "spakky-outbox")
}
ORDERS = [("o-1", "alice", 120), ("o-2", "bob", 80), ("o-3", "alice", 5000), ("o-4", "alice", 40), ("o-5", "bob", 300)]


def build() -> SpakkyApplication:
    """Assemble the service: core plugins, the in-memory storage, a printing transport."""
    os.environ.setdefault("SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS", "1.0")
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=PLUGINS)
    for pod in (
        InMemoryOutboxState, InMemoryTransaction, AsyncInMemoryTransaction,
        InMemoryOutboxStorage, AsyncInMemoryOutboxStorage,
        InMemoryOrderStore, PrintingEventTransport, PrintingSyncEventTransport,
    ):
        app.add(pod)
    return app.scan(orders_package)


async def place(
    context: ApplicationContext, use_case: PlaceOrderUseCase, order: tuple[str, str, int]
) -> str:
    """Place one order in its own Spakky context, as every concurrent caller must."""
    context.clear_context()
    try:
        await use_case.execute(*order)
    except OrderRejectedError as error:
        return f"  [usecase] {order[0]} rolled back: {error}"
    return f"  [usecase] {order[0]} committed"


def main() -> None:
    """Place orders, let the relay deliver, print what happened."""
    app = build().start()
    context = app.application_context
    assert isinstance(context, ApplicationContext)
    loop = context._ApplicationContext__event_loop  # type: ignore[attr-defined]
    try:
        use_case = context.get(PlaceOrderUseCase)
        print("Placing orders (each in a @Transactional() use case):")
        for order in ORDERS:
            print(asyncio.run_coroutine_threadsafe(place(context, use_case, order), loop).result(10))
        storage = context.get(IAsyncOutboxStorage)  # type: ignore[type-abstract]
        transport = context.get(PrintingEventTransport)
        committed = asyncio.run_coroutine_threadsafe(context.get(IOrderStore).count(), loop).result(10)  # type: ignore[type-abstract]
        deadline = time.monotonic() + 10
        while len(transport.delivered) < committed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert isinstance(storage, IAsyncOutboxAdministration)
        stats = asyncio.run_coroutine_threadsafe(storage.stats(), loop).result(10)
        print(
            f"Summary: {committed} orders committed, {len(transport.delivered)} events relayed, "
            f"outbox pending={stats.pending} published={stats.published} abandoned={stats.abandoned}"
        )
    finally:
        app.stop()


if __name__ == "__main__":
    main()
