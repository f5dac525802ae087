"""The inbox drill at test size (issue 19.5): relay and consumer SIGKILLed, every effect exactly once.

2,000 events over 100 keys per broker; the full 20,000 runs as
``python -m tests.faults.inbox_drill`` (see ``inbox_drill.py``, whose
docstring says what the drill does and counts).
"""

from pathlib import Path

from spakky_outbox_testservices.resolve import KafkaBroker

from tests.faults.inbox_drill import (
    KafkaInboxBroker,
    RabbitMQInboxBroker,
    run_inbox_drill,
)

EVENTS, KEYS = 2_000, 100


async def test_inbox_drill_rabbitmq_relay_and_consumer_sigkilled_expect_each_effect_once(
    postgres_url: str, rabbitmq_url: str, control: Path
) -> None:
    """Our RabbitMQ adapter, spakky-rabbitmq's consumer: duplicates in the queue, a handler killed, no effect twice or missing."""
    broker = RabbitMQInboxBroker(rabbitmq_url)
    try:
        report = await run_inbox_drill(postgres_url, broker, control, events=EVENTS, keys=KEYS)
    finally:
        broker.close()
    assert not report.problems(), f"{report.problems()}: {report.line()}"


async def test_inbox_drill_kafka_relay_and_consumer_sigkilled_expect_each_effect_once(
    postgres_url: str, kafka_broker: KafkaBroker, control: Path
) -> None:
    """Our Kafka adapter, spakky-kafka's consumer: duplicates in the topic, a handler killed, no effect twice or missing."""
    broker = KafkaInboxBroker(kafka_broker.bootstrap, kafka_broker.tansu)
    try:
        report = await run_inbox_drill(postgres_url, broker, control, events=EVENTS, keys=KEYS)
    finally:
        broker.close()
    assert not report.problems(), f"{report.problems()}: {report.line()}"
