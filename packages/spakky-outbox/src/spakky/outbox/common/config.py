"""Outbox configuration, read from ``SPAKKY_OUTBOX__*`` environment variables."""

import re
from collections.abc import Generator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from spakky.core.stereotype.configuration import Configuration
from spakky.outbox.error import InvalidOutboxConfigError

SPAKKY_OUTBOX_CONFIG_ENV_PREFIX: str = "SPAKKY_OUTBOX__"


_SECRET_WORD = re.compile(
    r"pass|pwd|secret|token|credential|private|auth|cookie|signature|^key$|[-_.]key$", re.IGNORECASE
)
"""Names whose values are never shown (``password``, ``api_key``, ``x-api-key``; not ``key_prefix``)."""
_URL_CREDENTIALS = re.compile(r"//\S*@")
"""The ``user:password@`` part of a URL, up to the last ``@`` before a blank: passwords
may hold ``@`` or ``/``, and a URL missing the colon of ``scheme://`` still has one."""
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<hosts>[^/?#]*)(?P<tail>[^@]*)", re.DOTALL)
"""A URL whose ``@`` (if any) is in its user part: the shape `redact_url` takes apart."""
_PASSWORD_PAIR = re.compile(r"(?P<name>password|pwd)=\S+", re.IGNORECASE)
"""A ``password=...`` pair of a key-value connection string."""


def settings_config(env_prefix: str, *, allow_inf_nan: bool = True) -> SettingsConfigDict:
    """The pydantic-settings options of an outbox settings class read from ``env_prefix*`` variables.

    UTF-8 ``.env`` files and ``__`` between nested names, as every settings
    class of the outbox and its storages reads them; ``allow_inf_nan=False``
    refuses ``inf``/``nan`` for every float field.
    """
    return SettingsConfigDict(
        env_prefix=env_prefix,
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        allow_inf_nan=allow_inf_nan,
    )


def secret_name(name: str) -> bool:
    """Whether a setting, query parameter, header or field named ``name`` holds a secret (its value is never shown)."""
    return _SECRET_WORD.search(name) is not None


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
        # A validator's own ValueError reads as its text, without pydantic's "Value error, ".
        message = redact_credentials(
            e["msg"].removeprefix("Value error, ") if e["type"] == "value_error" else e["msg"]
        )
        parts.append(f"{name}: {message}" if shown is None else f"{name}={shown}: {message}")
    return "; ".join(parts)


@contextmanager
def settings_errors(
    env_prefix: str, error_type: type[InvalidOutboxConfigError] = InvalidOutboxConfigError
) -> Generator[None]:
    """Turn pydantic's error while loading ``env_prefix`` settings into ``error_type``.

    Every ``SPAKKY_OUTBOX*`` settings class loads inside it, so each names its
    variables alike (see `describe_settings_error`) and pydantic's own error,
    which may echo a secret, never surfaces.

    Raises:
        InvalidOutboxConfigError: ``error_type``, naming each invalid variable.
    """
    try:
        yield
    except ValidationError as error:
        raise error_type(describe_settings_error(env_prefix, error)) from None


_KEEP_FOREVER = frozenset({"none", "forever", "off"})
"""Values of ``PUBLISHED_RETENTION_SECONDS`` that keep published messages."""


def _polling_interval(value: float) -> float:
    if value < 0:
        raise ValueError("must be 0 or more seconds (0: claim again without pausing)")
    return value


MIN_FIGURES_INTERVAL_SECONDS = 1.0
"""Shortest window of the relay's figures: one storage write per window and relay."""


def _figures_interval(value: float) -> float:
    if 0 < value < MIN_FIGURES_INTERVAL_SECONDS:
        raise ValueError(
            f"must be 0 (write no figures) or at least {MIN_FIGURES_INTERVAL_SECONDS:g} second: "
            "the relay writes one window of its figures to the storage this often (default 10)"
        )
    if value < 0:
        raise ValueError("must be 0 (write no figures) or more seconds (default 10)")
    return value


MAX_BATCHES_IN_FLIGHT = 16
"""Upper bound of ``BATCHES_IN_FLIGHT``: each batch in flight holds a claim and its payloads."""


def _batches_in_flight(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_BATCHES_IN_FLIGHT:
        raise ValueError(
            f"must be 1 to {MAX_BATCHES_IN_FLIGHT}: the batches one async relay works on at once, "
            "each holding a claim and its payloads (unset: chosen by the transport)"
        )
    return value


def _batch_size(value: int) -> int:
    if value < 1:
        raise ValueError(
            "must be at least 1: a relay claiming no message delivers nothing "
            "(SPAKKY_OUTBOX__RELAY=off runs no relay in this process)"
        )
    return value


def _max_retry_count(value: int) -> int:
    if value < 0:
        raise ValueError("must be 0 or more (0 or 1: abandon a message at its first refusal)")
    # 8.5 passed 0 on to the storage, whose claims then matched no message; 0
    # retries means what 1 attempt means: abandon at the first refusal.
    return max(value, 1)


def _claim_timeout(value: float) -> float:
    if value <= 0:
        raise ValueError(
            "must be more than 0 seconds: a claim that lasts no time lets every "
            "relay take the same messages (default 300)"
        )
    return value


MIN_CLAIM_LEASE_SECONDS = 1.0
"""Shortest claim lease: renewals (every third of it) stay a few per second at most."""


def _claim_lease(value: float) -> float:
    if value < MIN_CLAIM_LEASE_SECONDS:
        raise ValueError(
            f"must be at least {MIN_CLAIM_LEASE_SECONDS:g} second: a relay renews "
            "its claims every third of the lease, and a shorter lease costs more "
            "renewals than sends and is lost in a pause of a live relay (default 10)"
        )
    return value


MIN_BATCH_MAX_BYTES = 1024
"""Smallest payload budget of one claim."""
DEFAULT_BATCH_MAX_BYTES = 16 * 1024 * 1024
"""Default payload budget of one claim: 16 MiB (a hundred 1 KB events use 0.6% of it)."""


def _batch_max_bytes(value: int) -> int:
    if value < MIN_BATCH_MAX_BYTES:
        raise ValueError(
            f"must be at least {MIN_BATCH_MAX_BYTES} bytes: the payload bytes one claim may hold "
            f"(default {DEFAULT_BATCH_MAX_BYTES}, 16 MiB; a larger message is still claimed alone)"
        )
    return value


BUSY_POLLING_SECONDS = 0.01
"""Below this polling interval an idle relay claims so often that startup warns."""
LARGE_BATCH_SIZE = 10_000
"""Above this batch size one claim holds the storage long enough that startup warns."""


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

    model_config: ClassVar[SettingsConfigDict] = settings_config(
        SPAKKY_OUTBOX_CONFIG_ENV_PREFIX, allow_inf_nan=False
    )

    polling_interval_seconds: Annotated[float, AfterValidator(_polling_interval)] = 1.0
    """Longest sleep between two claims when nothing wakes the relay earlier (0: no pause)."""
    batch_size: Annotated[int, AfterValidator(_batch_size)] = 100
    """Messages claimed per round trip."""
    batches_in_flight: Annotated[int | None, AfterValidator(_batches_in_flight)] = None
    """Batches the async relay works on at once: while one waits for the broker's
    confirms or its acknowledgement, the next is claimed and sent. Each claim holds
    its keys, so a key's order holds as between relays. Unset: 2 through a transport
    that asks for it (the outbox's Kafka adapter), 1 through any other. The sync
    relay works on one."""
    batch_max_bytes: Annotated[int, AfterValidator(_batch_max_bytes)] = DEFAULT_BATCH_MAX_BYTES
    """Payload bytes one claim may hold: the claim takes messages in order until
    the next would pass it, always at least one (a larger message goes alone),
    and a key whose next message does not fit waits whole for the next claim,
    so relay memory stays bounded whatever the payloads. Applied by every
    storage of this repository (in-memory, SQLAlchemy, Redis, MongoDB)."""
    max_retry_count: Annotated[int, AfterValidator(_max_retry_count)] = 5
    """Refusals a message may receive before it is abandoned (0 and 1 alike:
    abandoned at the first refusal, never retried)."""
    claim_timeout_seconds: Annotated[float, AfterValidator(_claim_timeout)] = 300.0
    """Longest a claim lasts, even while its relay is alive (the 8.5 meaning)."""
    claim_lease_seconds: Annotated[float, AfterValidator(_claim_lease)] = 10.0
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
    figures_interval_seconds: Annotated[float, AfterValidator(_figures_interval)] = 10.0
    """Every this many seconds the relay writes its figures of the window just ended
    (messages sent, refused, abandoned, batches, commit-to-send waits) to a storage that
    keeps them, for the console's delivery chart; a window with nothing in it is not
    written, and a failed write is logged and the window dropped (0: write none)."""

    @field_validator("published_retention_seconds", mode="before")
    @classmethod
    def _keep_forever(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in _KEEP_FOREVER:
            return None
        return value

    def unusual_settings(self) -> tuple[str, ...]:
        """Warnings about accepted values that make a relay costly, one per setting.

        8.5 accepted these, so they are not refused; the relay logs each at startup.
        """
        found: list[str] = []
        prefix = SPAKKY_OUTBOX_CONFIG_ENV_PREFIX
        if self.polling_interval_seconds < BUSY_POLLING_SECONDS:
            pause = (
                "without pausing" if self.polling_interval_seconds == 0
                else f"after {self.polling_interval_seconds:g} s"
            )
            found.append(
                f"{prefix}POLLING_INTERVAL_SECONDS={self.polling_interval_seconds:g}: an idle "
                f"relay claims again {pause}, one storage round trip each time; commits "
                "wake the relay early where the storage can, so the default 1.0 costs "
                "no latency there"
            )
        if self.batch_size > LARGE_BATCH_SIZE:
            found.append(
                f"{prefix}BATCH_SIZE={self.batch_size}: one claim of that many messages "
                "holds the storage for long (one Redis script, one large transaction) "
                "and keeps every payload in memory; batches of 100-1000 drain as fast"
            )
        return tuple(found)

    def __init__(self) -> None:
        """Load outbox configuration from environment variables.

        Raises:
            InvalidOutboxConfigError: A variable holds a value of the wrong type
                or range; the error names the variable.
        """
        with settings_errors(SPAKKY_OUTBOX_CONFIG_ENV_PREFIX):
            super().__init__()
