"""Kafka delivery through confluent-kafka (librdkafka): ``pip install "spakky-outbox[kafka]"``."""
