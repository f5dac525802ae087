"""A consuming service: spakky-kafka / spakky-rabbitmq consumers of `E2eOrderPlaced`."""
