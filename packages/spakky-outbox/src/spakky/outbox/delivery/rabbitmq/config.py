"""RabbitMQ delivery settings, read from ``SPAKKY_OUTBOX_RABBITMQ__*`` variables."""

import ssl
from pathlib import Path
from typing import Annotated, ClassVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from spakky.core.stereotype.configuration import Configuration
from spakky.outbox.common.config import redact_credentials, settings_errors
from spakky.outbox.error import InvalidOutboxConfigError

SPAKKY_OUTBOX_RABBITMQ_CONFIG_ENV_PREFIX: str = "SPAKKY_OUTBOX_RABBITMQ__"
"""Environment prefix of every RabbitMQ delivery setting."""


@Configuration()
class RabbitMQDeliveryConfig(BaseSettings):
    """Where and how the RabbitMQ delivery adapter publishes.

    Messages go where spakky-rabbitmq publishes them (the default exchange, or
    ``exchange_name``, with the event name as routing key, into a durable
    queue of that name), with the event's headers and payload, so
    spakky-rabbitmq consumers read them unchanged. Unlike spakky-rabbitmq 8.5
    they are persistent, published ``mandatory`` on one kept channel with
    publisher confirms, and a flush returns once RabbitMQ confirmed them all.
    """

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        env_prefix=SPAKKY_OUTBOX_RABBITMQ_CONFIG_ENV_PREFIX,
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        allow_inf_nan=False,
    )

    url: str = "amqp://guest:guest@localhost:5672/"
    """``amqp://`` or ``amqps://`` (TLS) URL: user, password, host, port, virtual host."""
    user: str | None = None
    """User name; overrides the URL's."""
    password: SecretStr | None = None
    """Password; overrides the URL's (keep it out of the URL where secrets are injected separately)."""
    vhost: str | None = None
    """Virtual host; overrides the URL's path."""
    exchange_name: str | None = None
    """Exchange to publish to, declared and bound as spakky-rabbitmq does with
    ``SPAKKY_RABBITMQ__EXCHANGE_NAME`` (direct, not durable); unset: the default exchange."""
    ssl_ca_file: Path | None = None
    """PEM file of the CA that signed the server's certificate (else the system's store); ``amqps://`` only."""
    ssl_cert_file: Path | None = None
    """PEM client certificate, for servers that authenticate clients by TLS."""
    ssl_key_file: Path | None = None
    """PEM private key of the client certificate."""
    confirm_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    """Longest a flush waits for RabbitMQ's confirms before the batch counts as an outage."""
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Longest one connection attempt may take."""
    reconnect_backoff_max_seconds: Annotated[float, Field(gt=0)] = 5.0
    """Longest pause between reconnection attempts while RabbitMQ is unreachable."""

    def __init__(self) -> None:
        """Load the settings from environment variables and check they fit together.

        Raises:
            InvalidOutboxConfigError: A variable is invalid or the settings
                contradict each other; the error names the variables.
        """
        with settings_errors(SPAKKY_OUTBOX_RABBITMQ_CONFIG_ENV_PREFIX):
            super().__init__()
        problem = self._problem()
        if problem is not None:
            raise InvalidOutboxConfigError(problem)

    def _problem(self) -> str | None:
        prefix = SPAKKY_OUTBOX_RABBITMQ_CONFIG_ENV_PREFIX
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - parsing the port is the check
        except ValueError as error:
            return f"{prefix}URL={redact_credentials(self.url)!r}: {error}"
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            return f"{prefix}URL={redact_credentials(self.url)!r}: expected amqp://host[:port][/vhost] or amqps://..."
        files = {"SSL_CA_FILE": self.ssl_ca_file, "SSL_CERT_FILE": self.ssl_cert_file, "SSL_KEY_FILE": self.ssl_key_file}
        given = {name: path for name, path in files.items() if path is not None}
        if given and parts.scheme != "amqps":
            return f"{prefix}{next(iter(given))} is set but {prefix}URL is not amqps://: TLS settings need amqps"
        for name, path in given.items():
            if not path.is_file():
                return f"{prefix}{name}={str(path)!r}: no such file"
        if self.ssl_key_file is not None and self.ssl_cert_file is None:
            return f"{prefix}SSL_KEY_FILE needs {prefix}SSL_CERT_FILE"
        return None

    def connection_url(self) -> str:
        """The URL to connect with: the configured one with the user, password and vhost overrides."""
        parts = urlsplit(self.url)
        user = self.user if self.user is not None else unquote(parts.username or "")
        password = (
            self.password.get_secret_value() if self.password is not None else unquote(parts.password or "")
        )
        userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        host = parts.hostname or ""
        netloc = f"{userinfo}@" if userinfo else ""
        netloc += f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        path = "/" + quote(self.vhost, safe="") if self.vhost is not None else parts.path
        return urlunsplit((parts.scheme, netloc, path, parts.query, ""))

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``amqps://`` (the system's CAs unless a CA file is set); None for ``amqp://``."""
        if urlsplit(self.url).scheme != "amqps":
            return None
        context = ssl.create_default_context(cafile=str(self.ssl_ca_file) if self.ssl_ca_file else None)
        if self.ssl_cert_file is not None:
            context.load_cert_chain(str(self.ssl_cert_file), str(self.ssl_key_file) if self.ssl_key_file else None)
        return context

    def describe(self) -> str:
        """Where the adapter publishes, for logs and health (no credentials)."""
        parts = urlsplit(self.url)
        vhost = self.vhost if self.vhost is not None else unquote(parts.path.lstrip("/")) or "/"
        port = f":{parts.port}" if parts.port is not None else ""
        exchange = self.exchange_name or "(default exchange)"
        return f"rabbitmq {parts.scheme}://{parts.hostname}{port} vhost {vhost} exchange {exchange}"
