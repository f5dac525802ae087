"""The outbox's own delivery adapters: Kafka and RabbitMQ transports that confirm every batch."""
