"""Another service: ``python consumer.py`` prints every OrderPlaced record from Kafka until Ctrl-C.

A plain confluent-kafka consumer: the outbox writes what any Kafka consumer
reads (topic = event name, key = partition key, JSON value, the trace context
in the ``traceparent`` header), and spakky-kafka's consumers read it the same way.
"""

import json
import os
import signal
import threading

from confluent_kafka import Consumer, KafkaError

SETTINGS = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "KAFKA_GROUP_ID": "shop-order-printer",
}


def trace_id(headers: list[tuple[str, bytes | None]] | None) -> str:
    """The trace id of a W3C ``traceparent`` header (``00-<trace id>-<span id>-<flags>``)."""
    for name, value in headers or []:
        if name == "traceparent" and value:
            return value.decode().split("-")[1]
    return "-"


def main() -> None:
    """Consume until Ctrl-C or SIGTERM."""
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    consumer = Consumer({
        "bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        "group.id": os.environ["KAFKA_GROUP_ID"],
        "auto.offset.reset": "earliest",  # a new group reads what was sent before it started
        # The topic comes with the first event, maybe after this consumer started: look
        # for it every 5 s (librdkafka's default refresh is 5 minutes).
        "topic.metadata.refresh.interval.ms": 5000,
    })
    consumer.subscribe(["OrderPlaced"])
    print("[consumer] waiting for OrderPlaced (Ctrl-C stops)", flush=True)
    try:
        while not stop.is_set():
            record = consumer.poll(0.5)
            if record is None:
                continue
            error = record.error()
            if error is not None:
                if error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # the topic comes with the first event
                    print(f"[consumer] {error}", flush=True)
                continue
            event = json.loads(record.value() or b"{}")
            print(
                f"[consumer] {event['order_id']} from {event['customer_id']} ({event['amount']})"
                f" trace {trace_id(record.headers())}",
                flush=True,
            )
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
