"""Conversion between `OutboxMessage` and the document that stores it, and the indexes.

One document per message::

    {_id: UUID, event_name, payload: binary, headers: {...}, created_at: date,
     oid: ObjectId, partition_key: str | null, state: "pending" | "published" |
     "abandoned", retry_count, claimed_by, claim_id, claimed_at, available_at,
     published_at, abandoned_at, last_error}

``saved_at`` is the save order, taken from the server: the save inserts with an upsert
whose update pipeline sets it to ``$$NOW``, inside the transaction,
so a key's order never depends on the writers' clocks: with 5 s of skew
between two hosts, a later commit still comes later (``created_at`` stays the
writer's time, for people). BSON dates keep milliseconds: two saves of one
key by different writers in the same millisecond of the server (the first
one committed, the second one saved, within 1 ms) are ordered by
``created_at`` and ``oid``. Documents written before ``saved_at`` existed
have none, sort first (MongoDB orders a missing field before dates), and keep
their old order among themselves: messages are ordered by
``(saved_at, created_at, oid)``. ``available_at`` is when the message may be
claimed next (null: now); a claim, a renewal or a scheduled retry sets it on
the server clock.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast
from uuid import UUID

from bson import ObjectId
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from spakky.outbox.common.figures import RELAY_FIGURES_RETENTION, RelayFigures
from spakky.outbox.common.message import OutboxMessage, validate_message
from spakky.outbox.error import InvalidOutboxMessageError

type Document = dict[str, Any]

CODEC_OPTIONS: CodecOptions[Document] = CodecOptions(
    document_class=dict,
    uuid_representation=UuidRepresentation.STANDARD,
    tz_aware=True,
    tzinfo=UTC,
)
"""UUIDs as BSON binary subtype 4 and timezone-aware UTC dates."""

ORDER: dict[str, int] = {"saved_at": 1, "created_at": 1, "oid": 1}
"""Save order: the server's time of the save; then creation time and ObjectId (ties, documents from before)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class State(StrEnum):
    """Lifecycle of a stored message."""

    PENDING = "pending"
    PUBLISHED = "published"
    ABANDONED = "abandoned"


def to_document(message: OutboxMessage) -> Document:
    """Validate ``message`` and return the document to insert (`insert_stamped` sets ``saved_at``).

    Raises:
        InvalidOutboxMessageError: A field has a type MongoDB cannot store as is.
    """
    validate_message(message)
    headers = dict(message.headers)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidOutboxMessageError("headers must map str to str")
    created_at = message.created_at
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return {
        "_id": message.id,
        "event_name": message.event_name,
        "payload": bytes(message.payload),
        "headers": headers,
        "created_at": created_at,
        "saved_at": None,
        "oid": ObjectId(),
        "partition_key": message.partition_key,
        "state": State.PENDING.value,
        "retry_count": message.retry_count,
        "claimed_by": None,
        "claim_id": None,
        "claimed_at": None,
        "available_at": None,
        "published_at": None,
        "abandoned_at": None,
        "last_error": None,
    }


def _typed[T](document: Mapping[str, Any], name: str, kind: type[T]) -> T:
    value = document.get(name)
    if not isinstance(value, kind):
        raise TypeError(f"{name} is {type(value).__name__}, expected {kind.__name__}")
    return value


def _optional[T](document: Mapping[str, Any], name: str, kind: type[T]) -> T | None:
    return None if document.get(name) is None else _typed(document, name, kind)


def to_message(document: Mapping[str, Any]) -> OutboxMessage:
    """Build an `OutboxMessage` from its stored document.

    Raises:
        TypeError: A field is missing or has the wrong type (a damaged document).
    """
    headers = cast(dict[Any, Any], _typed(document, "headers", dict))
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise TypeError("headers must map str to str")
    retry_count = _typed(document, "retry_count", int)
    return OutboxMessage(
        id=_typed(document, "_id", UUID),
        event_name=_typed(document, "event_name", str),
        payload=_typed(document, "payload", bytes),
        headers=dict(headers),
        created_at=_typed(document, "created_at", datetime),
        published_at=_optional(document, "published_at", datetime),
        retry_count=retry_count,
        claimed_at=_optional(document, "claimed_at", datetime),
        partition_key=_optional(document, "partition_key", str),
        abandoned_at=_optional(document, "abandoned_at", datetime),
        last_error=_optional(document, "last_error", str),
    )


def position(document: Mapping[str, Any]) -> int:
    """Save order of a stored document as one integer: ``(saved_at, created_at, oid)``, as `ORDER` sorts.

    A document without ``saved_at`` (written before it) sorts before every
    one with it; a damaged document sorts first; decoding it later abandons it.
    """
    saved_at = document.get("saved_at")
    created_at = document.get("created_at")
    oid = document.get("oid")
    saved = (saved_at - _EPOCH) // timedelta(milliseconds=1) + 1 if isinstance(saved_at, datetime) else 0
    millis = (created_at - _EPOCH) // timedelta(milliseconds=1) if isinstance(created_at, datetime) else 0
    return (max(0, saved) << 160) | (max(0, millis) << 96) | (int(str(oid), 16) if isinstance(oid, ObjectId) else 0)


def insert_stamped(document: Document) -> tuple[Document, list[Document]]:
    """Filter and update pipeline of an upsert inserting ``document`` with ``saved_at`` = the server's ``$$NOW``.

    The filter (the id, and a state no stored document lacks) matches
    nothing, so the upsert inserts, and an id already stored fails with a
    duplicate key, as ``insert_one`` would.
    """
    fields = {name: value for name, value in document.items() if name not in ("_id", "saved_at")}
    return (
        {"_id": document["_id"], "state": {"$exists": False}},
        [{"$set": {name: {"$literal": value} for name, value in fields.items()}}, {"$set": {"saved_at": "$$NOW"}}],
    )


@dataclass(frozen=True)
class IndexSpec:
    """One index of the outbox collection."""

    name: str
    keys: tuple[tuple[str, int], ...]
    partial: Mapping[str, Any]
    expire_after_seconds: int | None = field(default=None)

    def matches(self, info: Mapping[str, Any]) -> bool:
        """Whether an existing index (``index_information()`` entry) is this one."""
        return (
            tuple((k, int(v)) for k, v in info.get("key", ())) == self.keys
            and dict(info.get("partialFilterExpression") or {}) == dict(self.partial)
            and info.get("expireAfterSeconds") == self.expire_after_seconds
        )


KEYLESS_PENDING = IndexSpec(
    "spakky_outbox_keyless_pending",
    (("saved_at", 1), ("created_at", 1), ("oid", 1)),
    {"state": State.PENDING.value, "partition_key": None},
)
"""Keyless lane: pending keyless messages in save order."""
KEYED_PENDING = IndexSpec(
    "spakky_outbox_keyed_pending",
    (("partition_key", 1), ("saved_at", 1), ("created_at", 1), ("oid", 1)),
    {"state": State.PENDING.value, "partition_key": {"$type": "string"}},
)
"""Keyed lane: pending keyed messages, key by key, each in save order."""
ABANDONED = IndexSpec(
    "spakky_outbox_abandoned",
    (("state", 1), ("saved_at", 1), ("created_at", 1), ("oid", 1)),
    {"state": State.ABANDONED.value},
)
"""Abandoned messages, oldest first (listing, requeue, counting).

``state`` leads the key only so the pattern differs from the keyless lane's:
servers before MongoDB 5.0 refuse two indexes with one key pattern."""


def published_index(retention_seconds: float | None) -> IndexSpec:
    """Published messages by publication time; a TTL index when retention is set."""
    return IndexSpec(
        "spakky_outbox_published",
        (("published_at", 1),),
        {"state": State.PUBLISHED.value},
        None if retention_seconds is None else max(0, round(retention_seconds)),
    )


FIGURES_ENDED = IndexSpec(
    "spakky_outbox_figures_ended_at",
    (("ended_at", 1),),
    {},
    round(RELAY_FIGURES_RETENTION.total_seconds()),
)
"""The relays' windows by their end: reads go along it, and as a TTL index it expires
windows past retention even when no relay writes any more."""


def to_figures_document(figures: RelayFigures) -> Document:
    """The document of one relay window in the figures collection."""
    return {
        "relay": figures.relay,
        "started_at": figures.started_at,
        "ended_at": figures.ended_at,
        "sent": figures.sent,
        "refused": figures.refused,
        "abandoned": figures.abandoned,
        "batches": figures.batches,
        "commit_to_send": list(figures.commit_to_send),
        "commit_to_send_max": figures.commit_to_send_max,
    }


def to_figures(document: Mapping[str, Any]) -> RelayFigures:
    """A relay window from its document."""
    return RelayFigures(
        relay=_typed(document, "relay", str),
        started_at=_typed(document, "started_at", datetime),
        ended_at=_typed(document, "ended_at", datetime),
        sent=int(document["sent"]),
        refused=int(document["refused"]),
        abandoned=int(document["abandoned"]),
        batches=int(document["batches"]),
        commit_to_send=tuple(int(count) for count in document["commit_to_send"]),
        commit_to_send_max=float(document["commit_to_send_max"]),
    )


def outbox_indexes(retention_seconds: float | None) -> tuple[IndexSpec, ...]:
    """Every index of the outbox collection for a published-message retention."""
    return (KEYLESS_PENDING, KEYED_PENDING, ABANDONED, published_index(retention_seconds))


def to_listed_message(document: Mapping[str, Any]) -> OutboxMessage | None:
    """Like `to_message`, but a damaged document still lists (with what could be read).

    Operators must see every abandoned message, above all those abandoned
    because they could not be decoded. None only when the id is not a UUID.
    """
    try:
        return to_message(document)
    except TypeError:
        message_id = document.get("_id")
        if not isinstance(message_id, UUID):
            return None

        def get[T](name: str, kind: type[T], default: T) -> T:
            value = document.get(name)
            return value if isinstance(value, kind) else default

        return OutboxMessage(
            id=message_id,
            event_name=get("event_name", str, ""),
            payload=get("payload", bytes, b""),
            headers={},
            created_at=get("created_at", datetime, _EPOCH),
            retry_count=get("retry_count", int, 0),
            partition_key=document.get("partition_key") if isinstance(document.get("partition_key"), str) else None,
            abandoned_at=document.get("abandoned_at") if isinstance(document.get("abandoned_at"), datetime) else None,
            last_error=document.get("last_error") if isinstance(document.get("last_error"), str) else None,
        )
