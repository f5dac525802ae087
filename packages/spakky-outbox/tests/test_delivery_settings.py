"""The delivery adapters' settings: what the client gets, and errors that name the variable, never a secret."""

import ssl
from pathlib import Path

import pytest
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.delivery.kafka.config import KafkaDeliveryConfig
from spakky.outbox.delivery.rabbitmq.config import RabbitMQDeliveryConfig
from spakky.outbox.error import InvalidOutboxConfigError

KAFKA = "SPAKKY_OUTBOX_KAFKA__"
RABBITMQ = "SPAKKY_OUTBOX_RABBITMQ__"


def _set(monkeypatch: pytest.MonkeyPatch, prefix: str, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"{prefix}{name}", value)


def test_kafka_settings_defaults_expect_idempotent_acks_all_murmur2_and_confirm_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the brokers are needed; the producer is idempotent, acks=all, Java-compatible partitioner, records time out with the confirm timeout."""
    _set(monkeypatch, KAFKA, BOOTSTRAP_SERVERS="k1:9092,k2:9092", OPTIONS='{"compression.type": "lz4"}')
    settings = KafkaDeliveryConfig().producer_settings()
    assert settings["bootstrap.servers"] == "k1:9092,k2:9092"
    assert (settings["acks"], settings["enable.idempotence"]) == ("all", True)
    assert settings["partitioner"] == "murmur2_random"
    assert settings["message.timeout.ms"] == 30_000
    assert settings["compression.type"] == "lz4"
    assert settings["security.protocol"] == "PLAINTEXT"


def test_kafka_settings_sasl_ssl_expect_credentials_passed_and_never_described(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SASL_SSL with SCRAM and a CA file: librdkafka gets them; the description names the brokers, not the secret."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    _set(
        monkeypatch, KAFKA, BOOTSTRAP_SERVERS="k1:9093", SECURITY_PROTOCOL="SASL_SSL", SASL_MECHANISM="SCRAM-SHA-512",
        SASL_USERNAME="relay", SASL_PASSWORD="hunter2", SSL_CA_LOCATION=str(ca),
    )
    config = KafkaDeliveryConfig()
    settings = config.producer_settings()
    assert (settings["sasl.mechanism"], settings["sasl.username"], settings["sasl.password"]) == (
        "SCRAM-SHA-512", "relay", "hunter2"
    )
    assert settings["ssl.ca.location"] == str(ca)
    assert "hunter2" not in config.describe() and "hunter2" not in repr(config)


def test_rabbitmq_settings_overrides_expect_connection_url_with_them_and_description_without_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """User, password and vhost override the URL's (quoted); the description keeps host, vhost and exchange only."""
    _set(
        monkeypatch, RABBITMQ, URL="amqp://guest:guest@mq.internal:5673/old", USER="relay", PASSWORD="p@ss/w:rd",
        VHOST="orders", EXCHANGE_NAME="events",
    )
    config = RabbitMQDeliveryConfig()
    assert config.connection_url() == "amqp://relay:p%40ss%2Fw%3Ard@mq.internal:5673/orders"
    assert config.describe() == "rabbitmq amqp://mq.internal:5673 vhost orders exchange events"
    assert config.tls_context() is None


def test_rabbitmq_settings_amqps_expect_verifying_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """``amqps://`` gets a TLS context that checks the server's certificate and name."""
    _set(monkeypatch, RABBITMQ, URL="amqps://u:hunter2@mq.example:5671/")
    context = RabbitMQDeliveryConfig().tls_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


type DeliveryConfig = type[KafkaDeliveryConfig] | type[RabbitMQDeliveryConfig]

PREFIXES: dict[DeliveryConfig, str] = {KafkaDeliveryConfig: KAFKA, RabbitMQDeliveryConfig: RABBITMQ}
"""Each adapter's settings class and the prefix of its variables."""


@pytest.mark.parametrize(
    ("settings", "env", "expected"),
    [
        (KafkaDeliveryConfig, {}, f"{KAFKA}BOOTSTRAP_SERVERS: Field required"),
        (KafkaDeliveryConfig, {"BOOTSTRAP_SERVERS": "k:9092", "SECURITY_PROTOCOL": "TLS"}, f"{KAFKA}SECURITY_PROTOCOL='TLS'"),
        (KafkaDeliveryConfig, {"BOOTSTRAP_SERVERS": "k:9092", "SECURITY_PROTOCOL": "SASL_SSL", "SASL_PASSWORD": "hunter2"},
         f"{KAFKA}SECURITY_PROTOCOL=SASL_SSL needs {KAFKA}SASL_MECHANISM"),
        (KafkaDeliveryConfig, {"BOOTSTRAP_SERVERS": "k:9092", "SASL_USERNAME": "u", "SASL_PASSWORD": "hunter2"},
         f"{KAFKA}SASL_* is set but {KAFKA}SECURITY_PROTOCOL=PLAINTEXT"),
        (KafkaDeliveryConfig, {"BOOTSTRAP_SERVERS": "k:9092", "SECURITY_PROTOCOL": "SSL", "SSL_CA_LOCATION": "/nowhere/ca.pem"},
         f"{KAFKA}SSL_CA_LOCATION='/nowhere/ca.pem': no such file"),
        (KafkaDeliveryConfig, {"BOOTSTRAP_SERVERS": "k:9092", "OPTIONS": '{"acks": "1"}'}, f"{KAFKA}OPTIONS may not set acks"),
        (KafkaDeliveryConfig, {"BOOTSTRAP_SERVERS": "k:9092", "OPTIONS": '{"sasl.password": "hunter2"'}, f"{KAFKA}OPTIONS"),
        (KafkaDeliveryConfig, {"BOOTSTRAP_SERVERS": "k:9092", "CONFIRM_TIMEOUT_SECONDS": "0"},
         f"{KAFKA}CONFIRM_TIMEOUT_SECONDS='0': Input should be greater than 0"),
        (RabbitMQDeliveryConfig, {"URL": "http://u:hunter2@mq:5672/"}, f"{RABBITMQ}URL='http://***@mq:5672/': expected amqp://"),
        (RabbitMQDeliveryConfig, {"URL": "amqp://u:hunter2@mq:notaport/"}, f"{RABBITMQ}URL='amqp://***@mq:notaport/'"),
        (RabbitMQDeliveryConfig, {"URL": "amqp://u:hunter2@mq/", "SSL_CA_FILE": "/etc/hosts"}, "TLS settings need amqps"),
        (RabbitMQDeliveryConfig, {"URL": "amqps://u:hunter2@mq/", "SSL_CA_FILE": "/nowhere/ca.pem"},
         f"{RABBITMQ}SSL_CA_FILE='/nowhere/ca.pem': no such file"),
        (RabbitMQDeliveryConfig, {"CONFIRM_TIMEOUT_SECONDS": "-1"},
         f"{RABBITMQ}CONFIRM_TIMEOUT_SECONDS='-1': Input should be greater than 0"),
    ],
    ids=[
        "kafka-no-brokers", "kafka-unknown-protocol", "kafka-sasl-without-mechanism", "kafka-sasl-on-plaintext",
        "kafka-missing-ca-file", "kafka-options-set-acks", "kafka-options-not-json", "kafka-zero-confirm-timeout",
        "rabbitmq-http-url", "rabbitmq-bad-port", "rabbitmq-tls-on-amqp", "rabbitmq-missing-ca-file",
        "rabbitmq-negative-confirm-timeout",
    ],
)
def test_delivery_settings_invalid_expect_error_naming_the_variable_without_secrets(
    monkeypatch: pytest.MonkeyPatch, settings: DeliveryConfig, env: dict[str, str], expected: str
) -> None:
    """Each bad Kafka or RabbitMQ setting fails with the variable named, and no password in the text."""
    _set(monkeypatch, PREFIXES[settings], **env)
    with pytest.raises(InvalidOutboxConfigError) as raised:
        settings()
    text = str(raised.value)
    assert expected in text
    assert "hunter2" not in text


def test_outbox_settings_unknown_delivery_expect_choices_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SPAKKY_OUTBOX__DELIVERY`` takes kafka or rabbitmq; anything else names both."""
    monkeypatch.setenv("SPAKKY_OUTBOX__DELIVERY", "kafak")
    with pytest.raises(InvalidOutboxConfigError, match="SPAKKY_OUTBOX__DELIVERY='kafak': Input should be 'kafka' or 'rabbitmq'"):
        OutboxConfig()
