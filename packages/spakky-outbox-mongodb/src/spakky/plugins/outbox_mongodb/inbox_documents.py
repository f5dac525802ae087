"""The inbox collection: its documents, indexes and statements, for both flavours.

One document per (consumer name, message identity)::

    {_id: ObjectId, consumer: str, message_id: str, recorded_at: date,
     lease_owner: str | null, lease_until: date | null}

``recorded_at`` is the server's clock (``$$NOW``) when the record was written
(a lease: when it was taken or finished). ``lease_owner`` is a string only
while a lease-mode handler has not finished; records of the transactional
mode have no lease fields at all. Indexes:

- ``spakky_outbox_inbox_key``: unique on ``(consumer, message_id)``, so two
  transactions recording one message cannot both commit;
- ``spakky_outbox_inbox_window``: TTL on ``recorded_at`` after the dedup window
  (``SPAKKY_OUTBOX__INBOX__WINDOW_SECONDS``); the sweep (``purge``) and the
  oldest record (``stats``) walk it too;
- ``spakky_outbox_inbox_leased``: partial on unfinished leases, for ``stats``.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from spakky.outbox.inbox.identity import inbox_key
from spakky.outbox.ports.inbox import InboxLease, LeaseOutcome
from spakky.plugins.outbox_mongodb.documents import Document

LEASED: dict[str, Any] = {"lease_owner": {"$type": "string"}}
"""Records whose lease-mode handler has not finished (live or lapsed lease)."""

RECORD: list[Document] = [{"$set": {"recorded_at": {"$ifNull": ["$recorded_at", "$$NOW"]}}}]
"""Upsert pipeline of a transactional record: inserts ``recorded_at = $$NOW``, leaves a stored record as it is."""

OLDEST_FIRST: list[tuple[str, int]] = [("recorded_at", 1)]
"""Sort of the sweep and of the oldest record: along the window's TTL index."""


@dataclass(frozen=True)
class InboxIndex:
    """One index of the inbox collection."""

    name: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    partial: Mapping[str, Any] = field(default_factory=dict[str, Any])
    expire_after_seconds: int | None = None

    def options(self) -> dict[str, Any]:
        """``create_index`` keyword arguments."""
        options: dict[str, Any] = {"name": self.name}
        if self.unique:
            options["unique"] = True
        if self.partial:
            options["partialFilterExpression"] = dict(self.partial)
        if self.expire_after_seconds is not None:
            options["expireAfterSeconds"] = self.expire_after_seconds
        return options

    def matches(self, info: Mapping[str, Any]) -> bool:
        """Whether an existing index (``index_information()`` entry) is this one."""
        return (
            tuple((k, int(v)) for k, v in info.get("key", ())) == self.keys
            and bool(info.get("unique")) == self.unique
            and dict(info.get("partialFilterExpression") or {}) == dict(self.partial)
            and info.get("expireAfterSeconds") == self.expire_after_seconds
        )


def inbox_indexes(window_seconds: float) -> tuple[InboxIndex, ...]:
    """Every index of the inbox collection for a dedup window of ``window_seconds``."""
    return (
        InboxIndex("spakky_outbox_inbox_key", (("consumer", 1), ("message_id", 1)), unique=True),
        InboxIndex("spakky_outbox_inbox_window", (("recorded_at", 1),), expire_after_seconds=max(1, round(window_seconds))),
        InboxIndex("spakky_outbox_inbox_leased", (("lease_until", 1),), partial=LEASED),
    )


def record_filter(consumer: str, message_id: str) -> Document:
    """The filter of one record.

    Raises:
        InvalidInboxKeyError: A part is empty or too long.
    """
    consumer, message_id = inbox_key(consumer, message_id)
    return {"consumer": consumer, "message_id": message_id}


def new_lease(key: Document, owner: str, lease_ms: int) -> tuple[Document, list[Document]]:
    """Filter and pipeline of an upsert inserting a leased record; a stored key fails with a duplicate key.

    The filter also asks for a ``recorded_at`` no stored record lacks, so it
    never matches: the upsert inserts (on the server's clock) or the unique
    key refuses it.
    """
    return (
        {**key, "recorded_at": {"$exists": False}},
        [{"$set": {"recorded_at": "$$NOW", "lease_owner": owner, "lease_until": {"$add": ["$$NOW", lease_ms]}}}],
    )


def take_over(key: Document, owner: str, lease_ms: int) -> tuple[Document, list[Document]]:
    """Filter and pipeline of the update taking a lapsed lease over."""
    return (
        {**key, **LEASED, "$expr": {"$lte": ["$lease_until", "$$NOW"]}},
        [{"$set": {"recorded_at": "$$NOW", "lease_owner": owner, "lease_until": {"$add": ["$$NOW", lease_ms]}}}],
    )


def finish(key: Document, token: str) -> tuple[Document, list[Document]]:
    """Filter and pipeline of the update marking the lease held by ``token`` done."""
    return (
        {**key, "lease_owner": token},
        [{"$set": {"recorded_at": "$$NOW", "lease_owner": None, "lease_until": None}}],
    )


def held(key: Document, token: str) -> Document:
    """The filter of the record while ``token`` holds its lease."""
    return {**key, "lease_owner": token}


def lease_refused(found: Mapping[str, Any] | None) -> InboxLease:
    """Why a lease was not acquired: done, or busy (a live lease; no record: released a moment ago)."""
    done = found is not None and found.get("lease_owner") is None
    return InboxLease(LeaseOutcome.DONE if done else LeaseOutcome.BUSY)


def written_before(before: datetime) -> Document:
    """The filter of the records written before ``before``."""
    return {"recorded_at": {"$lt": before}}


def lease_ms(lease_seconds: float) -> int:
    """A lease in milliseconds, at least one."""
    return max(1, round(lease_seconds * 1000))
