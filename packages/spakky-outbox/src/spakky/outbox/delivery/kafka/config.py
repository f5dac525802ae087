"""Kafka delivery settings, read from ``SPAKKY_OUTBOX_KAFKA__*`` variables."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError
from spakky.core.stereotype.configuration import Configuration
from spakky.outbox.common.config import settings_errors
from spakky.outbox.error import InvalidOutboxConfigError

SPAKKY_OUTBOX_KAFKA_CONFIG_ENV_PREFIX: str = "SPAKKY_OUTBOX_KAFKA__"
"""Environment prefix of every Kafka delivery setting."""

GUARANTEES: dict[str, object] = {"acks": "all", "enable.idempotence": True}
"""Producer properties that make a confirmation mean stored once, in order; never overridden."""


class KafkaSecurityProtocol(StrEnum):
    """How the producer talks to the brokers (librdkafka ``security.protocol``)."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSaslMechanism(StrEnum):
    """SASL mechanism (librdkafka ``sasl.mechanism``)."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class KafkaPartitioner(StrEnum):
    """How a record key picks its partition (librdkafka ``partitioner``)."""

    MURMUR2_RANDOM = "murmur2_random"
    """murmur2 of the key, as Kafka's Java clients and aiokafka (spakky-kafka's async transport) place keys."""
    CONSISTENT_RANDOM = "consistent_random"
    """CRC32 of the key, librdkafka's own default (spakky-kafka's sync transport)."""


@Configuration()
class KafkaDeliveryConfig(BaseSettings):
    """Where and how the Kafka delivery adapter produces.

    Records go to the topic named after the event, keyed by the partition key,
    with the event's headers, exactly as spakky-kafka's transports produce
    them, so spakky-kafka consumers read them unchanged. The producer is
    idempotent with ``acks=all``; a flush returns once every record of the
    batch is acknowledged.
    """

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        env_prefix=SPAKKY_OUTBOX_KAFKA_CONFIG_ENV_PREFIX,
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        allow_inf_nan=False,
    )

    bootstrap_servers: Annotated[str, Field(min_length=1)]
    """Brokers to bootstrap from: ``host:port[,host:port...]``."""
    client_id: str = "spakky-outbox"
    """``client.id`` the brokers see (quotas, logs)."""
    security_protocol: KafkaSecurityProtocol = KafkaSecurityProtocol.PLAINTEXT
    """``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``."""
    sasl_mechanism: KafkaSaslMechanism | None = None
    """``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``; needed with a ``SASL_*`` protocol."""
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    """PEM file of the CA that signed the brokers' certificates (else the system's store)."""
    ssl_certificate_location: Path | None = None
    """PEM client certificate, for brokers that authenticate clients by TLS."""
    ssl_key_location: Path | None = None
    """PEM private key of the client certificate."""
    ssl_key_password: SecretStr | None = None
    """Password of ``ssl_key_location`` when it is encrypted."""
    partitioner: KafkaPartitioner = KafkaPartitioner.MURMUR2_RANDOM
    """How a key picks its partition; keep the one your other producers of these topics use."""
    create_topics: bool = True
    """Create a missing topic before its first record (once per topic and process)."""
    topic_partitions: Annotated[int, Field(ge=-1)] = -1
    """Partitions of a created topic; -1 takes the broker's default (``num.partitions``)."""
    topic_replication_factor: Annotated[int, Field(ge=-1)] = -1
    """Replication factor of a created topic; -1 takes the broker's default."""
    confirm_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    """Longest a flush waits for the brokers' acknowledgements before the batch counts as
    an outage (and is retried; records that did arrive meanwhile arrive twice)."""
    options: dict[str, str | int | float | bool] = Field(default_factory=dict[str, str | int | float | bool])
    """Further librdkafka producer properties as JSON, e.g. ``{"compression.type": "lz4"}``
    (``acks`` and ``enable.idempotence`` are fixed and refused here)."""

    def __init__(self) -> None:
        """Load the settings from environment variables and check they fit together.

        Raises:
            InvalidOutboxConfigError: A variable is missing or invalid, or the
                settings contradict each other; the error names the variables.
        """
        try:
            with settings_errors(SPAKKY_OUTBOX_KAFKA_CONFIG_ENV_PREFIX):
                super().__init__()
        except SettingsError:  # the only structured field: its value is not JSON (and is not shown)
            raise InvalidOutboxConfigError(
                f"{SPAKKY_OUTBOX_KAFKA_CONFIG_ENV_PREFIX}OPTIONS: expected a JSON object of librdkafka properties"
            ) from None
        problem = self._problem()
        if problem is not None:
            raise InvalidOutboxConfigError(problem)

    def _problem(self) -> str | None:
        prefix = SPAKKY_OUTBOX_KAFKA_CONFIG_ENV_PREFIX
        sasl = self.security_protocol in (KafkaSecurityProtocol.SASL_PLAINTEXT, KafkaSecurityProtocol.SASL_SSL)
        tls = self.security_protocol in (KafkaSecurityProtocol.SSL, KafkaSecurityProtocol.SASL_SSL)
        if sasl and (self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None):
            return (
                f"{prefix}SECURITY_PROTOCOL={self.security_protocol} needs {prefix}SASL_MECHANISM, "
                f"{prefix}SASL_USERNAME and {prefix}SASL_PASSWORD"
            )
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            return (
                f"{prefix}SASL_* is set but {prefix}SECURITY_PROTOCOL={self.security_protocol}: "
                "set it to SASL_SSL (or SASL_PLAINTEXT) so the credentials are used"
            )
        files = {
            "SSL_CA_LOCATION": self.ssl_ca_location,
            "SSL_CERTIFICATE_LOCATION": self.ssl_certificate_location,
            "SSL_KEY_LOCATION": self.ssl_key_location,
        }
        given = {name: path for name, path in files.items() if path is not None}
        if given and not tls:
            return (
                f"{prefix}{next(iter(given))} is set but {prefix}SECURITY_PROTOCOL={self.security_protocol}: "
                "set it to SSL (or SASL_SSL)"
            )
        for name, path in given.items():
            if not path.is_file():
                return f"{prefix}{name}={str(path)!r}: no such file"
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            return f"{prefix}SSL_CERTIFICATE_LOCATION and {prefix}SSL_KEY_LOCATION go together: set both or neither"
        fixed = sorted(set(self.options) & set(GUARANTEES))
        if fixed:
            return f"{prefix}OPTIONS may not set {', '.join(fixed)}: the adapter always produces with acks=all, idempotent"
        return None

    def connection_settings(self) -> dict[str, Any]:
        """Librdkafka properties that say how to reach and authenticate to the cluster."""
        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.value,
        }
        if self.sasl_mechanism is not None:
            settings["sasl.mechanism"] = self.sasl_mechanism.value
        if self.sasl_username is not None:
            settings["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            settings["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location is not None:
            settings["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location is not None:
            settings["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location is not None:
            settings["ssl.key.location"] = str(self.ssl_key_location)
        if self.ssl_key_password is not None:
            settings["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return settings

    def producer_settings(self) -> dict[str, Any]:
        """Every producer property: connection, the guarantees, the partitioner, the options."""
        return {
            **self.connection_settings(),
            "partitioner": self.partitioner.value,
            # A record not acknowledged within the confirm timeout fails instead of
            # lingering in the queue after the relay has released its batch.
            "message.timeout.ms": int(self.confirm_timeout_seconds * 1000),
            **self.options,
            **GUARANTEES,
        }

    def describe(self) -> str:
        """Where the adapter produces, for logs and health (no credentials)."""
        return f"kafka {self.bootstrap_servers} ({self.security_protocol})"
