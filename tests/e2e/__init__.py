"""End-to-end tests: real Redis outbox, real RabbitMQ transport."""
