"""RabbitMQ delivery through aiormq with publisher confirms: ``pip install "spakky-outbox[rabbitmq]"``."""
