"""Outbox configuration, read from ``SPAKKY_OUTBOX__*`` environment variables."""

import re
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from spakky.core.stereotype.configuration import Configuration
from spakky.outbox.error import InvalidOutboxConfigError

SPAKKY_OUTBOX_CONFIG_ENV_PREFIX: str = "SPAKKY_OUTBOX__"


_SECRET_WORD = re.compile(r"pass|pwd|secret|token|credential|private|auth|^key$|_key$", re.IGNORECASE)
"""Field names whose values are never shown (``password``, ``api_key``; not ``key_prefix``)."""
_URL_CREDENTIALS = re.compile(r"//\S*@")
"""The ``user:password@`` part of a URL, up to the last ``@`` before a blank: passwords
may hold ``@`` or ``/``, and a URL missing the colon of ``scheme://`` still has one."""
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<hosts>[^/?#]*)(?P<tail>[^@]*)", re.DOTALL)
"""A URL whose ``@`` (if any) is in its user part: the shape `redact_url` takes apart."""
_PASSWORD_PAIR = re.compile(r"(?P<name>password|pwd)=\S+", re.IGNORECASE)
"""A ``password=...`` pair of a key-value connection string."""


def redact_credentials(text: str) -> str:
    """Replace URL credentials and ``password=`` values in ``text`` with ``***``."""
    text = _URL_CREDENTIALS.sub("//***@", text)
    return _PASSWORD_PAIR.sub(r"\g<name>=***", text)


def redact_url(url: str) -> str:
    """``url`` as it may be printed: no password, neither in its user part nor its query.

    The user name, hosts, path and other query parameters stay. A URL that
    does not parse as one (no ``://``, or an ``@`` past its hosts, as an
    unencoded ``/`` in a password makes it) loses everything up to its last
    ``@`` instead.
    """
    parsed = _URL.fullmatch(url)
    if parsed is None:
        return redact_credentials(url)
    userinfo, at, hosts = parsed["hosts"].rpartition("@")
    user = userinfo.partition(":")[0]
    shown = f"{parsed['scheme']}://{user}@{hosts}" if at and user else f"{parsed['scheme']}://{hosts}"
    path, question, query = parsed["tail"].partition("?")
    if not question:
        return shown + path
    kept = [pair for pair in query.split("&") if not _SECRET_WORD.search(pair.partition("=")[0])]
    return f"{shown}{path}?{'&'.join(kept)}" if kept else shown + path


def _shown_input(location: tuple[int | str, ...], value: object) -> str | None:
    """The input as it may be printed, or None when it must not be."""
    if any(isinstance(part, str) and _SECRET_WORD.search(part) for part in location):
        return None
    if isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(redact_credentials(value))
    # Containers (a missing field's error carries every variable of the model) never show.
    return None


def describe_settings_error(env_prefix: str, error: ValidationError) -> str:
    """Name each invalid environment variable and what is wrong with it.

    The value is shown when it is safe: never for fields that look secret
    (password, secret, token, key, credentials), never as a whole set of
    variables, and URLs and connection strings lose their credentials. Storage packages use it too,
    so every ``SPAKKY_OUTBOX*`` error reads alike.
    """
    parts: list[str] = []
    for e in error.errors():
        name = f"{env_prefix}{'__'.join(str(part) for part in e['loc']).upper()}"
        shown = _shown_input(e["loc"], e.get("input"))
        message = redact_credentials(e["msg"])
        parts.append(f"{name}: {message}" if shown is None else f"{name}={shown}: {message}")
    return "; ".join(parts)


_KEEP_FOREVER = frozenset({"none", "forever", "off"})
"""Values of ``PUBLISHED_RETENTION_SECONDS`` that keep published messages."""


class RelayMode(StrEnum):
    """Which relay a process runs."""

    ASYNC = "async"
    """Run the asyncio relay task (default)."""
    SYNC = "sync"
    """Run the thread-based relay."""
    OFF = "off"
    """Run no relay: the process only writes (e.g. a web process beside workers)."""


class DeliveryChoice(StrEnum):
    """Which of the outbox's own delivery adapters the relay sends through."""

    KAFKA = "kafka"
    """Kafka through confluent-kafka (``spakky-outbox[kafka]``, settings ``SPAKKY_OUTBOX_KAFKA__*``)."""
    RABBITMQ = "rabbitmq"
    """RabbitMQ through aiormq (``spakky-outbox[rabbitmq]``, settings ``SPAKKY_OUTBOX_RABBITMQ__*``)."""


@Configuration()
class OutboxConfig(BaseSettings):
    """Outbox plugin configuration loaded from environment variables."""

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        env_prefix=SPAKKY_OUTBOX_CONFIG_ENV_PREFIX,
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        allow_inf_nan=False,
    )

    polling_interval_seconds: Annotated[float, Field(gt=0)] = 1.0
    """Longest sleep between two claims when nothing wakes the relay earlier."""
    batch_size: Annotated[int, Field(ge=1)] = 100
    """Messages claimed per round trip."""
    max_retry_count: Annotated[int, Field(ge=1)] = 5
    """Refusals a message may receive before it is abandoned."""
    claim_timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    """Longest a claim lasts, even while its relay is alive (the 8.5 meaning)."""
    claim_lease_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Lease of a claim on storages with liveness: a relay renews it every third
    of this while it works, so a dead relay's messages free up this long after
    its last renewal, while a slow batch keeps its claim up to the claim timeout."""
    storage: str | None = None
    """Name of the storage to use when several are installed (e.g. ``sqlalchemy``)."""
    relay: RelayMode = RelayMode.ASYNC
    """Which relay this process runs: ``async``, ``sync`` or ``off``."""
    delivery: DeliveryChoice | None = None
    """The outbox's own delivery adapter the relay sends through (``kafka``, ``rabbitmq``);
    unset, it sends through the application's event transport (e.g. spakky-kafka's)."""
    retry_backoff_base_seconds: Annotated[float, Field(ge=0)] = 0.5
    """First retry delay; doubles per retry, with equal jitter (half fixed, half random)."""
    retry_backoff_max_seconds: Annotated[float, Field(ge=0)] = 30.0
    """Upper bound of one retry delay."""
    outage_backoff_max_seconds: Annotated[float, Field(gt=0)] = 30.0
    """Upper bound of the pause after a storage or transport outage."""
    published_retention_seconds: Annotated[float, Field(ge=0)] | None = 7 * 24 * 3600.0
    """Purge published messages older than this from inside the relay (default a
    week; ``none`` keeps them forever, as 8.5 did)."""

    @field_validator("published_retention_seconds", mode="before")
    @classmethod
    def _keep_forever(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in _KEEP_FOREVER:
            return None
        return value

    def __init__(self) -> None:
        """Load outbox configuration from environment variables.

        Raises:
            InvalidOutboxConfigError: A variable holds a value of the wrong type
                or range; the error names the variable.
        """
        try:
            super().__init__()
        except ValidationError as error:
            raise InvalidOutboxConfigError(
                describe_settings_error(SPAKKY_OUTBOX_CONFIG_ENV_PREFIX, error)
            ) from None
