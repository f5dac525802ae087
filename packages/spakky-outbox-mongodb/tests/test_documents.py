"""Document mapping and index definitions, checked on the server's raw BSON."""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest
from bson import ObjectId
from bson.binary import Binary, UuidRepresentation
from bson.codec_options import CodecOptions
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import InvalidOutboxMessageError
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.documents import (
    ABANDONED,
    KEYED_PENDING,
    KEYLESS_PENDING,
    outbox_indexes,
    position,
    to_document,
    to_message,
)
from spakky.plugins.outbox_mongodb.transaction import AsyncMongoTransaction

from .conftest import MongoOutbox


def _message(key: str | None = "k", created_at: datetime | None = None) -> OutboxMessage:
    return OutboxMessage(
        uuid4(), "OrderPlaced", bytes(range(256)), {"traceparent": "00-1-2-01"},
        created_at or datetime.now(UTC), partition_key=key,
    )


async def test_saved_document_expect_standard_uuid_and_aware_dates(outbox: MongoOutbox) -> None:
    """The id is stored as a standard UUID (binary subtype 4), dates come back timezone-aware."""
    sent = _message(created_at=datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))))
    async with AsyncMongoTransaction(outbox.config, outbox.connections):
        await outbox.storage().save(sent)
    untouched: CodecOptions[dict[str, Any]] = CodecOptions(uuid_representation=UuidRepresentation.UNSPECIFIED)
    raw = await outbox.raw.with_options(codec_options=untouched).find_one({})
    assert isinstance(raw["_id"], Binary) and raw["_id"].subtype == 4
    assert raw["_id"].as_uuid(UuidRepresentation.STANDARD) == sent.id
    decoded = to_message(await outbox.raw.find_one({"_id": sent.id}))
    assert decoded.created_at.tzinfo is not None
    assert decoded.created_at == datetime(2026, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)  # BSON keeps ms
    assert (decoded.payload, decoded.headers, decoded.partition_key) == (sent.payload, sent.headers, "k")


def test_position_same_millisecond_expect_save_order() -> None:
    """Messages created in one millisecond keep their save order through the ObjectId tie-breaker."""
    created = datetime(2026, 5, 1, tzinfo=UTC)
    documents = [to_document(_message(created_at=created)) for _ in range(50)]
    assert sorted(documents, key=position) == documents
    later = to_document(_message(created_at=created + timedelta(milliseconds=1)))
    earlier = {**later, "created_at": created - timedelta(milliseconds=1), "oid": ObjectId()}
    assert position(earlier) < position(documents[0]) < position(later)


def test_to_document_naive_created_at_expect_utc() -> None:
    """A naive creation time is taken as UTC, never as local time."""
    document = to_document(_message(created_at=datetime(2026, 5, 1, 8, 0)))
    assert document["created_at"] == datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("payload", "text", "payload must be bytes"),
        ("partition_key", 7, "partition_key must be a str or None"),
        ("headers", {"a": 1}, "headers must map str to str"),
        ("retry_count", -1, "retry_count must be a non-negative int"),
    ],
)
def test_to_document_bad_field_expect_clear_error(field: str, value: object, reason: str) -> None:
    """A message that cannot be stored is refused before anything is written."""
    message = OutboxMessage(**{**_message().__dict__, field: value})
    with pytest.raises(InvalidOutboxMessageError, match=reason):
        to_document(message)


@pytest.mark.parametrize("damage", [{"payload": "x"}, {"headers": 3}, {"_id": "not-a-uuid"}, {"created_at": None}])
def test_to_message_damaged_expect_type_error(damage: dict[str, Any]) -> None:
    """A damaged document is refused with a TypeError (the claim then abandons it)."""
    with pytest.raises(TypeError):
        to_message({**to_document(_message()), **damage})


async def test_create_indexes_expect_partial_and_ttl_definitions(outbox: MongoOutbox) -> None:
    """Startup creates the two claim lanes, the abandoned index and the TTL on published messages."""
    info = await outbox.raw.index_information()
    for spec in (KEYLESS_PENDING, KEYED_PENDING, ABANDONED):
        assert spec.matches(info[spec.name]), spec.name
    published = info["spakky_outbox_published"]
    assert published["expireAfterSeconds"] == 7 * 24 * 3600
    assert dict(published["partialFilterExpression"]) == {"state": "published"}
    assert dict(info[KEYLESS_PENDING.name]["partialFilterExpression"]) == {"state": "pending", "partition_key": None}


async def test_create_indexes_retention_changed_expect_ttl_follows(outbox: MongoOutbox) -> None:
    """A changed retention replaces the TTL; ``none`` keeps published messages (no expiry)."""
    for retention, expected in ((3600.0, 3600), (None, None)):
        config = OutboxConfig().model_copy(update={"published_retention_seconds": retention})
        manager = MongoOutboxConnectionManager(outbox.config, config)
        manager.create_indexes()
        manager.close()
        info = await outbox.raw.index_information()
        assert info["spakky_outbox_published"].get("expireAfterSeconds") == expected
    assert {spec.name for spec in outbox_indexes(None)} <= set(info)
