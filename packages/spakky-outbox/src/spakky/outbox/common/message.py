"""Outbox message model."""

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, SafeUUID

from spakky.outbox.error import InvalidOutboxMessageError


@dataclass(frozen=True)
class OutboxMessage:
    """Persistence-agnostic Outbox message model.

    Field order is part of the public contract: storages written for 6.x and
    8.5 construct messages positionally, so new fields are only ever appended.
    """

    id: UUID
    event_name: str
    payload: bytes
    headers: dict[str, str]
    created_at: datetime
    published_at: datetime | None = field(default=None)
    retry_count: int = field(default=0)
    claimed_at: datetime | None = field(default=None)
    partition_key: str | None = field(default=None)
    """Key pinning the message to one broker partition. None spreads round-robin."""
    abandoned_at: datetime | None = field(default=None)
    """When the relay gave up on this message. None means it is still pending."""
    last_error: str | None = field(default=None)
    """Text of the last delivery failure, kept for operators."""


_new = object.__new__
_set = object.__setattr__


def restored_message(
    message_id: UUID,
    event_name: str,
    payload: bytes,
    headers: dict[str, str],
    created_at: datetime,
    published_at: datetime | None,
    retry_count: int,
    claimed_at: datetime | None,
    partition_key: str | None,
    abandoned_at: datetime | None,
    last_error: str | None,
) -> OutboxMessage:
    """An `OutboxMessage` a storage read back, every field given, built without the dataclass's ``__init__``.

    The same message ``OutboxMessage(...)`` builds (equal, frozen, same
    repr), in a third of the time: the frozen dataclass's ``__init__`` sets
    each field through ``object.__setattr__``, and a claim builds a hundred of
    these per batch. No check is skipped: the model has none.
    """
    message = _new(OutboxMessage)
    _set(message, "__dict__", {
        "id": message_id,
        "event_name": event_name,
        "payload": payload,
        "headers": headers,
        "created_at": created_at,
        "published_at": published_at,
        "retry_count": retry_count,
        "claimed_at": claimed_at,
        "partition_key": partition_key,
        "abandoned_at": abandoned_at,
        "last_error": last_error,
    })
    return message


def message_id_from_text(text: bytes) -> UUID:
    """The UUID a storage kept as text (``str(uuid)``, 36 ASCII characters), parsed in C.

    What ``UUID(text.decode())`` returns for such text (it too only drops the
    dashes and reads 32 hex digits), without the Python of ``UUID.__init__``;
    other text (braces, a ``urn:uuid:`` prefix, damage) goes through ``UUID``
    itself, which raises ``ValueError`` on what it cannot read.
    """
    digits = text.replace(b"-", b"")
    if len(digits) != 32 or not digits.isalnum():  # int() would take "_", "+" or spaces
        return UUID(text.decode())
    message_id = _new(UUID)
    _set(message_id, "int", int(digits, 16))
    _set(message_id, "is_safe", SafeUUID.unknown)
    return message_id


def validate_message(message: OutboxMessage) -> None:
    """Refuse a message whose fields do not have the types the model declares.

    Storages call it before writing anything, so a bad message fails the save
    with the field's name instead of storing what cannot be read back. Headers
    are left to the storage, which knows how it encodes them.

    Raises:
        InvalidOutboxMessageError: Names the first field with a wrong type.
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


MESSAGE_ID_HEADER = "spakky-outbox-message-id"
"""Header the relay adds to every message it sends: the outbox message's id.

Added at send time, not stored; consumers that do not know it ignore it. The
inbox takes it as the message identity when present (see `spakky.outbox.inbox`).
"""
