"""Key names, and conversion between `OutboxMessage` and what the scripts store and return."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import cast
from uuid import UUID

from spakky.outbox.common.figures import RelayFigures, decode_buckets, encode_buckets
from spakky.outbox.common.message import (
    OutboxMessage,
    message_id_from_text,
    restored_message,
    validate_message,
)
from spakky.outbox.error import InvalidOutboxMessageError
from spakky.plugins.outbox_redis.config import DATA_SEGMENT, OUTBOX_SEGMENT

type RedisValue = str | bytes | int | float

MESSAGE_FIELDS: tuple[str, ...] = (
    "event_name",
    "payload",
    "headers",
    "created_at",
    "partition_key",
    "retry_count",
    "last_error",
    "claimed_at",
    "published_at",
    "abandoned_at",
)
"""Hash fields the scripts return for a message, after its id, in this order."""

LISTED_FIELDS: tuple[str, ...] = tuple(f for f in MESSAGE_FIELDS if f not in ("payload", "headers"))
"""Hash fields a listing returns after the id: everything but the payload and the headers."""

_EMPTY_HEADERS = b"{}"


@dataclass(frozen=True)
class RedisKeys:
    """Names of the keys of one outbox, all under one hash-tagged prefix.

    The outbox's own keys are ``<prefix>:_outbox:...`` and business keys
    ``<prefix>:_data:...``; a partition key or business name only ever fills
    the last part, so neither can name another key of this outbox, and no
    other outbox's prefix may contain those segments (see `check_key_prefix`).
    """

    prefix: str

    @property
    def outbox(self) -> str:
        """Common start of every key the outbox itself keeps."""
        return f"{self.prefix}:{OUTBOX_SEGMENT}"

    @property
    def pending(self) -> str:
        """ZSET of every undelivered message by position (also routes script calls)."""
        return f"{self.outbox}:pending"

    @property
    def wake(self) -> str:
        """ZSET relays block on (BZPOPMIN) to wake up after a save."""
        return f"{self.outbox}:wake"

    def message(self, message_id: UUID | str) -> str:
        """HASH holding one message."""
        return f"{self.outbox}:msg:{message_id}"

    @property
    def figures(self) -> str:
        """ZSET of the relays' windows by their end (ms), each member the window as JSON."""
        return f"{self.outbox}:figures"

    def business(self, name: str) -> str:
        """A key for business data in the outbox's slot, apart from the outbox's own keys."""
        return f"{self.prefix}:{DATA_SEGMENT}:{name}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    """``moment`` in whole milliseconds since the epoch (the figures' scores)."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(ms: int) -> datetime:
    """The moment ``ms`` milliseconds after the epoch, exactly."""
    return _EPOCH + timedelta(milliseconds=ms)


def encode_figures(figures: RelayFigures) -> str:
    """A relay window as its member of the figures set: JSON, times in ms since the epoch."""
    return json.dumps(
        {
            "relay": figures.relay,
            "started_at": epoch_ms(figures.started_at),
            "ended_at": epoch_ms(figures.ended_at),
            "sent": figures.sent,
            "refused": figures.refused,
            "abandoned": figures.abandoned,
            "batches": figures.batches,
            "commit_to_send": encode_buckets(figures.commit_to_send),
            "commit_to_send_max": figures.commit_to_send_max,
        },
        ensure_ascii=False,
    )


def decode_figures(member: bytes | str) -> RelayFigures:
    """A relay window from its member of the figures set."""
    fields = json.loads(member)
    return RelayFigures(
        relay=str(fields["relay"]),
        started_at=from_epoch_ms(int(fields["started_at"])),
        ended_at=from_epoch_ms(int(fields["ended_at"])),
        sent=int(fields["sent"]),
        refused=int(fields["refused"]),
        abandoned=int(fields["abandoned"]),
        batches=int(fields["batches"]),
        commit_to_send=decode_buckets(str(fields["commit_to_send"])),
        commit_to_send_max=float(fields["commit_to_send_max"]),
    )


def save_arguments(prefix: str, message: OutboxMessage) -> list[RedisValue]:
    """Validate ``message`` and return the ARGV of the save script.

    Validation happens here, before the script is queued in MULTI, because a
    command failing inside EXEC would commit the business writes without it.

    Raises:
        InvalidOutboxMessageError: A field has a type Redis cannot store as is.
    """
    validate_message(message)
    key = message.partition_key
    try:
        headers = json.dumps(dict(message.headers), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise InvalidOutboxMessageError(f"headers: {error}") from None
    return [
        prefix,
        str(message.id),
        message.event_name,
        bytes(message.payload),
        headers,
        message.created_at.isoformat(),
        message.retry_count,
        "0" if key is None else "1",
        "" if key is None else key,
    ]


def unframe(blob: bytes) -> list[bytes | None]:
    """Split a reply the scripts framed as ``<length>:<bytes>`` items (``-`` for none).

    One framed string per reply spares the client parsing a bulk string per
    field, which dominated the cost of a claim.
    """
    items: list[bytes | None] = []
    append = items.append
    position, end = 0, len(blob)
    while position < end:
        if blob[position] == 45:  # "-": the field is absent
            append(None)
            position += 1
            continue
        colon = blob.index(b":", position)
        start = colon + 1
        position = start + int(blob[position:colon])
        append(blob[start:position])
    return items


def from_millis(value: bytes | None) -> datetime | None:
    """Convert Redis milliseconds (as stored by the scripts) to an aware datetime."""
    if value is None:
        return None
    return _from_millis(value)


@lru_cache(maxsize=64)
def _from_millis(value: bytes) -> datetime:
    # One claim gives each of its messages the same claimed_at: decoded once a batch.
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def to_message(message_id: bytes, fields: list[bytes | None]) -> OutboxMessage:
    """Build an `OutboxMessage` from its id and its `MESSAGE_FIELDS` values.

    Raises:
        ValueError: A damaged record (the storage abandons such a message with
            the error as its reason; other decoding errors are caught alike).
    """
    (
        event_name,
        payload,
        headers,
        created_at,
        partition_key,
        retry_count,
        last_error,
        claimed_at,
        published_at,
        abandoned_at,
    ) = fields
    if event_name is None or payload is None or headers is None or created_at is None:
        raise ValueError("a required field (event_name, payload, headers, created_at) is missing")
    decoded: object = {} if headers == _EMPTY_HEADERS else json.loads(headers)
    if not isinstance(decoded, dict):
        raise ValueError("headers are not a JSON object")
    return restored_message(
        message_id_from_text(message_id),
        event_name.decode(),
        payload,
        cast(dict[str, str], decoded),
        datetime.fromisoformat(created_at.decode()),
        None if published_at is None else _from_millis(published_at),
        0 if retry_count is None else int(retry_count),
        None if claimed_at is None else _from_millis(claimed_at),
        None if partition_key is None else partition_key.decode(),
        None if abandoned_at is None else _from_millis(abandoned_at),
        None if last_error is None else last_error.decode(),
    )


def to_listed(message_id: bytes, fields: list[bytes | None]) -> OutboxMessage:
    """Build a listed `OutboxMessage` from its id and its `LISTED_FIELDS` values.

    The payload and headers were not read: the message carries ``b""`` and ``{}``.

    Raises:
        ValueError: The record lost its name or creation time (it is left out of the listing).
    """
    values = dict(zip(LISTED_FIELDS, fields, strict=True))
    return to_message(
        message_id,
        [b"" if f == "payload" else _EMPTY_HEADERS if f == "headers" else values[f] for f in MESSAGE_FIELDS],
    )


def age_seconds(created_at: bytes | None, now_millis: bytes) -> float | None:
    """Age of a message created at ``created_at`` (ISO) by the server clock."""
    if created_at is None:
        return None
    created = datetime.fromisoformat(created_at.decode())
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    now = datetime.fromtimestamp(int(now_millis) / 1000, tz=UTC)
    return max(0.0, (now - created).total_seconds())
