"""Conversion between `OutboxMessage` and the Redis hash that stores it."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from spakky.outbox.common.message import OutboxMessage
from spakky.plugins.outbox_redis.error import InvalidOutboxMessageError

type RedisValue = str | bytes | int | float


@dataclass(frozen=True)
class RedisKeys:
    """Names of the keys of one outbox, all under one hash-tagged prefix."""

    prefix: str

    @property
    def ready(self) -> str:
        """ZSET of claimable messages (keyless ones and each key's head)."""
        return f"{self.prefix}:ready"

    @property
    def marker(self) -> str:
        """ZSET relays block on to wake up after a save."""
        return f"{self.prefix}:marker"

    @property
    def dead(self) -> str:
        """ZSET of abandoned messages, by age."""
        return f"{self.prefix}:dead"

    def message(self, message_id: UUID | str) -> str:
        """HASH holding one message."""
        return f"{self.prefix}:msg:{message_id}"

    def business(self, name: str) -> str:
        """A key for business data that shares the outbox's hash tag."""
        return f"{self.prefix}:{name}"


def save_arguments(prefix: str, message: OutboxMessage) -> list[RedisValue]:
    """Validate ``message`` and return the ARGV of the save script.

    Validation happens here, before the script is queued in MULTI, because a
    command failing inside EXEC would commit the business writes without it.

    Raises:
        InvalidOutboxMessageError: A field has a type Redis cannot store as is.
    """
    if not isinstance(message.id, UUID):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidOutboxMessageError("id must be a UUID")
    if not isinstance(message.event_name, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidOutboxMessageError("event_name must be a str")
    if not isinstance(message.payload, bytes | bytearray):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidOutboxMessageError("payload must be bytes")
    if not isinstance(message.created_at, datetime):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidOutboxMessageError("created_at must be a datetime")
    if not isinstance(message.retry_count, int) or message.retry_count < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidOutboxMessageError("retry_count must be a non-negative int")
    key = message.partition_key
    if key is not None and not isinstance(key, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidOutboxMessageError("partition_key must be a str or None")
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


def pairs_to_mapping(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """Turn a flat HGETALL reply ``[k1, v1, k2, v2...]`` into a dict."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str | None:
    """Decode one optional text field."""
    value = fields.get(name)
    return None if value is None else value.decode()


def from_millis(value: bytes | str | None) -> datetime | None:
    """Convert Redis milliseconds (as stored by the scripts) to an aware datetime."""
    if value is None:
        return None
    return datetime.fromtimestamp(int(float(value)) / 1000, tz=UTC)


def to_message(fields: Mapping[bytes, bytes]) -> OutboxMessage:
    """Build an `OutboxMessage` from the fields of its hash."""
    headers: dict[str, str] = json.loads(fields[b"headers"])
    return OutboxMessage(
        id=UUID(fields[b"id"].decode()),
        event_name=fields[b"event_name"].decode(),
        payload=fields[b"payload"],
        headers=headers,
        created_at=datetime.fromisoformat(fields[b"created_at"].decode()),
        published_at=from_millis(fields.get(b"published_at")),
        retry_count=int(fields.get(b"retry_count", b"0")),
        claimed_at=from_millis(fields.get(b"claimed_at")),
        partition_key=_text(fields, b"partition_key"),
        abandoned_at=from_millis(fields.get(b"abandoned_at")),
        last_error=_text(fields, b"last_error"),
    )


def age_seconds(created_at: bytes | None, now_millis: bytes | str) -> float | None:
    """Age of a message created at ``created_at`` (ISO) by the server clock."""
    if created_at is None:
        return None
    created = datetime.fromisoformat(created_at.decode())
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    now = datetime.fromtimestamp(int(float(now_millis)) / 1000, tz=UTC)
    return max(0.0, (now - created).total_seconds())
