"""The shop service: ``python service.py`` places three orders and relays their events until Ctrl-C.

Needs a MongoDB replica set (transactions need one; a single node is enough)
and RabbitMQ. The settings below point at local ones and yield to the
environment: ``export SPAKKY_OUTBOX_MONGODB__URL=...`` points the service elsewhere.
"""

import os
import signal
import threading
import uuid

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.tracing.context import TraceContext

import shop
from shop.orders import OrderRejectedError, PlaceOrder

SETTINGS = {
    # spakky-outbox-mongodb: the replica set and database of the orders and of the outbox
    "SPAKKY_OUTBOX_MONGODB__URL": "mongodb://127.0.0.1:27017/?replicaSet=rs0",
    "SPAKKY_OUTBOX_MONGODB__DATABASE": "shop",
    # spakky-outbox: relay through its own RabbitMQ adapter (publisher confirms,
    # persistent messages) to a durable queue named after the event
    "SPAKKY_OUTBOX__DELIVERY": "rabbitmq",
    "SPAKKY_OUTBOX_RABBITMQ__URL": "amqp://guest:guest@127.0.0.1:5672/",
}
PLUGINS = {
    Plugin(name=name)
    for name in (
        "spakky-data", "spakky-domain", "spakky-event", "spakky-tracing",
        "spakky-outbox", "spakky-outbox-mongodb",
    )
}
ORDERS = [("alice", 120), ("bob", 5000), ("alice", 40)]


def main() -> None:
    """Place the orders, then keep relaying until Ctrl-C or SIGTERM."""
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=PLUGINS).scan(shop).start()
    try:
        loop = app.application_context.get(ApplicationEventLoop)  # the app's own event loop
        place_order = app.application_context.get(PlaceOrder)
        run = uuid.uuid4().hex[:6]
        for number, (customer, amount) in enumerate(ORDERS, start=1):
            order_id = f"{run}-{number}"
            trace = TraceContext.new_root()  # a web framework's middleware does this per request
            TraceContext.set(trace)
            try:
                loop.run(place_order.execute(order_id, customer, amount))
                print(f"[service] {order_id} committed, trace {trace.trace_id}", flush=True)
            except OrderRejectedError as error:
                print(f"[service] {order_id} rolled back, nothing stored or sent: {error}", flush=True)
            finally:
                TraceContext.clear()
        print("[service] relaying (Ctrl-C stops)", flush=True)
        stop.wait()
    finally:
        app.stop()


if __name__ == "__main__":
    main()
