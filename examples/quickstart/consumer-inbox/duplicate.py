"""``python duplicate.py``: queue every OrderPlaced waiting in RabbitMQ twice, as a relay crash can.

Run it while consumer.py is stopped: it takes each message off the queue and
puts it back twice, body and headers (the outbox's message id among them)
unchanged, so the consumer receives each order twice. Same RabbitMQ settings
as consumer.py.
"""

import json
import os

import pika

QUEUE = "OrderPlaced"


def main() -> None:
    """Take every waiting message, then publish each one twice."""
    parameters = pika.ConnectionParameters(
        host=os.environ.get("SPAKKY_RABBITMQ__HOST", "127.0.0.1"),
        port=int(os.environ.get("SPAKKY_RABBITMQ__PORT", "5672")),
        credentials=pika.PlainCredentials(
            os.environ.get("SPAKKY_RABBITMQ__USER", "guest"),
            os.environ.get("SPAKKY_RABBITMQ__PASSWORD", "guest"),
        ),
    )
    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        channel.confirm_delivery()  # each publish waits for the broker's confirm
        waiting = []
        while (got := channel.basic_get(QUEUE)) != (None, None, None):
            method, properties, body = got
            waiting.append((method.delivery_tag, properties, body))
        for tag, properties, body in waiting:
            for _ in range(2):
                channel.basic_publish("", QUEUE, body, properties)
            channel.basic_ack(tag)  # only once both copies are queued
            message_id = (properties.headers or {}).get("spakky-outbox-message-id")
            print(f"[duplicate] {json.loads(body)['order_id']} queued twice, message {message_id}", flush=True)
    finally:
        connection.close()


if __name__ == "__main__":
    main()
