"""Run the example: ``make demo`` (or ``uv run python -m examples.orders``).

The service keeps its orders and its outbox in one embedded SQLite file
(``examples/orders.sqlite3``, recreated on each run), relays with the default
settings, and prints what happened.
"""

import os
import time
from pathlib import Path
from typing import cast

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.ports.storage import IAsyncOutboxAdministration, IAsyncOutboxStorage
from sqlalchemy import create_engine, func, select

import examples.orders as orders_package
from examples.orders.domain import OrderRejectedError, PlaceOrderUseCase
from examples.orders.store import metadata, orders
from examples.orders.transport import PrintingEventTransport

DATABASE = Path(__file__).resolve().parent.parent / "orders.sqlite3"
PLUGINS = {
    Plugin(name=name)
    for name in (
        "spakky-data", "spakky-domain", "spakky-event", "spakky-tracing",
        "spakky-sqlalchemy", "spakky-outbox", "spakky-outbox-sqlalchemy",
    )
}
ORDERS = [
    ("o-1", "alice", 120), ("o-2", "bob", 80), ("o-3", "alice", 5000),
    ("o-4", "alice", 40), ("o-5", "bob", 300),
]


def prepare_database() -> None:
    """Start from an empty SQLite file with the orders table (the outbox table creates itself)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DATABASE}{suffix}").unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{DATABASE}")
    metadata.create_all(engine)
    engine.dispose()
    os.environ["SPAKKY_SQLALCHEMY__CONNECTION_STRING"] = f"sqlite+aiosqlite:///{DATABASE}"
    os.environ.setdefault("SPAKKY_OUTBOX__STORAGE", "sqlalchemy")


def build() -> SpakkyApplication:
    """Assemble the service from its plugins and this package."""
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=PLUGINS)
    return app.scan(orders_package)


def place(loop: ApplicationEventLoop, use_case: PlaceOrderUseCase, order: tuple[str, str, int]) -> str:
    """Place one order on the application's event loop (each call in a Spakky context of its own)."""
    try:
        loop.run(use_case.execute(*order), timeout=30)
    except OrderRejectedError as error:
        return f"  [usecase] {order[0]} rolled back: {error}"
    return f"  [usecase] {order[0]} committed"


def main() -> None:
    """Place orders, let the relay deliver, print what happened."""
    prepare_database()
    app = build().start()
    context = cast(ApplicationContext, app.application_context)
    loop = context.get(ApplicationEventLoop)
    try:
        use_case = context.get(PlaceOrderUseCase)
        print(f"Orders service on SQLite ({DATABASE.name}); placing orders in @Transactional() use cases:")
        for order in ORDERS:
            print(place(loop, use_case, order))
        engine = create_engine(f"sqlite:///{DATABASE}")
        with engine.connect() as connection:
            committed = connection.execute(select(func.count()).select_from(orders)).scalar_one()
        engine.dispose()
        transport = context.get(PrintingEventTransport)
        storage = context.get(IAsyncOutboxStorage)  # type: ignore[type-abstract]
        assert isinstance(storage, IAsyncOutboxAdministration)
        # Delivered first, acknowledged just after: wait for both (or 15 s).
        deadline = time.monotonic() + 15
        stats = loop.run(storage.stats(), timeout=30)
        while (len(transport.delivered) < committed or stats.pending) and time.monotonic() < deadline:
            time.sleep(0.02)
            stats = loop.run(storage.stats(), timeout=30)
        print(
            f"Summary: {committed} orders committed, {len(transport.delivered)} events relayed, "
            f"outbox pending={stats.pending} published={stats.published} abandoned={stats.abandoned}"
        )
    finally:
        app.stop()


if __name__ == "__main__":
    main()
