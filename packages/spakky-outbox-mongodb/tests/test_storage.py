"""Storage behaviour beyond the conformance suite.

Damaged documents, bounded requeue, key rotation, the byte budget, liveness fences,
administration that creates nothing, wake-up with and without change streams.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from pymongo.errors import OperationFailure
from spakky.outbox.backend.claims import undecodable_reason
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.testing.draining import drain_claims
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.error import MongoOutboxCollectionMissingError
from spakky.plugins.outbox_mongodb.storage import (
    AsyncMongoOutboxStorage,
    MongoOutboxStorage,
)
from spakky.plugins.outbox_mongodb.transaction import AsyncMongoTransaction

from .conftest import MongoOutbox, outbox_settings

MAX_RETRY = 5


def _message(key: str | None = None) -> OutboxMessage:
    return OutboxMessage(uuid4(), "OrderPlaced", b"{}", {"traceparent": "t"}, datetime.now(UTC), partition_key=key)


async def _write(outbox: MongoOutbox, messages: list[OutboxMessage]) -> None:
    storage = outbox.storage()
    async with AsyncMongoTransaction(outbox.config, outbox.connections):
        for message in messages:
            await storage.save(message)


async def test_fetch_pending_damaged_document_expect_abandoned_with_reason(outbox: MongoOutbox) -> None:
    """A document that cannot be decoded is abandoned in the claim with the reason; the rest is returned."""
    good, bad, follower = _message("k"), _message("k"), _message("k")
    await _write(outbox, [good, bad, follower])
    await outbox.raw.update_one({"_id": bad.id}, {"$set": {"headers": ["not", "a", "map"]}})
    storage = outbox.storage()
    claimed = await storage.fetch_pending(10, MAX_RETRY)
    assert [m.id for m in claimed] == [good.id, follower.id]
    raw = await outbox.raw.find_one({"_id": bad.id})
    assert raw["state"] == "abandoned" and raw["claimed_by"] is None
    assert raw["last_error"] == undecodable_reason(TypeError("headers is list, expected dict"))
    listed = await storage.list_abandoned()
    assert [(m.id, m.last_error) for m in listed] == [(bad.id, raw["last_error"])]


async def test_requeue_abandoned_bounded_expect_oldest_first_and_original_key_place(
    outbox: MongoOutbox,
) -> None:
    """Requeue takes at most ``limit`` oldest abandoned messages; a requeued head leads its key again."""
    head, follower = _message("k"), _message("k")
    others = [_message() for _ in range(4)]
    await _write(outbox, [head, follower, *others])
    storage = outbox.storage()
    assert len(await storage.fetch_pending(10, MAX_RETRY)) == 6
    for message in [head, *others]:
        await storage.abandon(message.id, "refused")
    await storage.release([follower.id])
    assert await storage.requeue_abandoned(limit=3) == 3
    assert await storage.requeue_abandoned(limit=3) == 2
    assert await storage.requeue_abandoned(limit=3) == 0
    claimed = await outbox.storage().fetch_pending(10, MAX_RETRY)
    keyed = [m.id for m in claimed if m.partition_key == "k"]
    assert keyed == [head.id, follower.id]
    assert all(m.retry_count == 0 for m in claimed)


async def test_fetch_pending_key_cursor_expect_keys_taken_in_turn(outbox: MongoOutbox) -> None:
    """One instance's successive claims walk the keys in turn instead of restarting at the first."""
    messages = [_message(key) for key in ("a", "b", "c") for _ in range(2)]
    await _write(outbox, messages)
    storage = outbox.storage()
    seen: list[str | None] = []
    for _ in range(3):
        batch = await storage.fetch_pending(2, MAX_RETRY)
        seen.append(batch[0].partition_key)
        await storage.release([m.id for m in batch])
    assert seen == ["a", "b", "c"]


_MB = 1_000_000
_BUDGET = 2 * 1024 * 1024
"""Two 1 MB payloads fit in the budget, three do not."""


def _budgeted(outbox: MongoOutbox, budget: int) -> OutboxConfig:
    return outbox.outbox_config.model_copy(update={"batch_max_bytes": budget})


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_fetch_pending_large_payloads_under_byte_budget_expect_bounded_claims_in_key_order(
    outbox: MongoOutbox, flavour: str
) -> None:
    """20 x 1 MB over two keys and keyless under a 2 MB budget: every claim holds two, all delivered in save order."""
    sent = [replace(_message(("a", "b", None)[i % 3]), payload=bytes([i]) * _MB) for i in range(20)]
    for start in range(0, len(sent), 5):
        await _write(outbox, sent[start : start + 5])
    config = _budgeted(outbox, _BUDGET)
    storage = (MongoOutboxStorage if flavour == "sync" else AsyncMongoOutboxStorage)(outbox.connections, config)
    claims = await drain_claims(storage, len(sent), MAX_RETRY)
    delivered = [m for claimed in claims for m in claimed]
    sizes = [sum(len(m.payload) for m in claimed) for claimed in claims]
    assert sizes == [2 * _MB] * 10
    assert [m.id for m in delivered] == [m.id for m in sent]
    assert [m.payload for m in delivered] == [m.payload for m in sent]


async def test_fetch_pending_key_cut_by_byte_budget_expect_first_in_next_claim(outbox: MongoOutbox) -> None:
    """A key the walk visited but the budget cut is not skipped: the next claim starts at it, keys go in save order."""
    budget = 4096
    sent = [replace(_message(key), payload=b"x" * (budget * 6 // 10)) for key in ("a", "b", "c", "d")]
    await _write(outbox, sent)
    storage = AsyncMongoOutboxStorage(outbox.connections, _budgeted(outbox, budget))
    claims: list[list[str | None]] = []
    for _ in sent:
        claimed = await storage.fetch_pending(2, MAX_RETRY)
        claims.append([m.partition_key for m in claimed])
        await storage.mark_published_many([m.id for m in claimed])
    assert claims == [["a"], ["b"], ["c"], ["d"]]


async def test_fetch_pending_payload_not_binary_expect_claim_goes_on_and_abandons_it(outbox: MongoOutbox) -> None:
    """A payload damaged into a string still has a size for the budget (0): the claim abandons it, the rest comes."""
    bad, good = _message("k"), _message()
    await _write(outbox, [bad, good])
    await outbox.raw.update_one({"_id": bad.id}, {"$set": {"payload": "not binary"}})
    claimed = await outbox.storage().fetch_pending(10, MAX_RETRY)
    assert [m.id for m in claimed] == [good.id]
    raw = await outbox.raw.find_one({"_id": bad.id})
    assert raw["state"] == "abandoned"
    assert raw["last_error"] == undecodable_reason(TypeError("payload is str, expected bytes"))


async def test_fetch_pending_deep_keys_expect_runs_spread_over_instances(outbox: MongoOutbox) -> None:
    """Interleaved deep keys: one claim takes runs of few keys, a second instance still finds keys."""
    await _write(outbox, [_message(f"k{i % 6}") for i in range(36)])
    first, second = outbox.storage(), outbox.storage()
    claimed = await first.fetch_pending(6, MAX_RETRY)
    assert len(claimed) == 6 and len({m.partition_key for m in claimed}) <= 3
    other = await second.fetch_pending(6, MAX_RETRY)
    assert other and not {m.partition_key for m in other} & {m.partition_key for m in claimed}


async def test_renew_claims_expect_fenced_by_owner_and_timeout(outbox: MongoOutbox) -> None:
    """Renewal extends only this instance's live claims; stats count only live claims."""
    sent = [_message(), _message()]
    await _write(outbox, sent)
    owner, intruder = outbox.storage(), outbox.storage()
    ids = [m.id for m in await owner.fetch_pending(10, MAX_RETRY)]
    before = {d["_id"]: d["available_at"] for d in await outbox.raw.find({}).to_list(None)}
    assert await intruder.renew_claims(ids) == 0
    assert await owner.renew_claims([*ids, uuid4()]) == 2
    after = {d["_id"]: d["available_at"] for d in await outbox.raw.find({}).to_list(None)}
    assert all(after[i] >= before[i] for i in ids)
    assert (await owner.stats()).claimed == 2
    await outbox.raw.update_many({}, {"$set": {"claimed_at": datetime(2000, 1, 1, tzinfo=UTC)}})
    assert await owner.renew_claims(ids) == 0  # older than the claim timeout
    await outbox.raw.update_many({}, {"$set": {"available_at": datetime(2000, 1, 1, tzinfo=UTC)}})
    stats = await owner.stats()
    assert (stats.pending, stats.claimed) == (2, 0)


async def test_administration_missing_collection_expect_error_and_nothing_created(outbox: MongoOutbox) -> None:
    """Administration on a collection that does not exist refuses, names it, and creates nothing."""
    config = outbox_settings(outbox.server.url, f"absent_{uuid4().hex}")
    connections = MongoOutboxConnectionManager(config, outbox.outbox_config)
    storage = AsyncMongoOutboxStorage(connections, outbox.outbox_config)
    calls: list[Callable[[], Awaitable[object]]] = [
        storage.stats,
        storage.list_abandoned,
        storage.requeue_abandoned,
        lambda: storage.purge_published(datetime.now(UTC)),
    ]
    try:
        for call in calls:
            with pytest.raises(MongoOutboxCollectionMissingError) as caught:
                await call()
            assert f"spakky_outbox_unit.{config.collection}" in str(caught.value)
        assert config.collection not in await outbox.raw.database.list_collection_names()
    finally:
        await connections.aclose()


async def test_wait_for_messages_other_process_commit_expect_change_stream_wake(outbox: MongoOutbox) -> None:
    """A commit this process did not make (another relay host) wakes the waiter through the change stream."""
    outbox.server.require_real("change streams")
    storage = outbox.storage()
    assert await storage.fetch_pending(10, MAX_RETRY) == []
    waiter = asyncio.ensure_future(storage.wait_for_messages(30.0))
    watcher: Any = storage._watcher
    await asyncio.wait_for(watcher.ready.wait(), 10)
    await outbox.raw.insert_one({"_id": uuid4(), "state": "pending"})  # bypasses this process's signal
    assert await asyncio.wait_for(waiter, 10) is True
    await storage.close_wake_up()


class _RefusingChangeStreams:
    """An outbox collection whose ``watch`` fails as on a standalone server (code 40573)."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def watch(self, *_: Any, **__: Any) -> Any:
        raise OperationFailure("The $changeStream stage is only supported on replica sets", code=40573)


async def test_wait_for_messages_no_change_streams_expect_polling_fallback(
    outbox: MongoOutbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the server refuses change streams the watcher stops; in-process commits still wake."""
    storage = outbox.storage()
    if not outbox.server.wire:
        # A replica set has change streams: its refusal is played; the wire server's is real.
        connections: Any = storage._connections  # pyright: ignore[reportPrivateUsage]
        real = connections.async_collection
        monkeypatch.setattr(connections, "async_collection", lambda client=None: _RefusingChangeStreams(real(client)))
    assert await storage.fetch_pending(10, MAX_RETRY) == []
    assert await storage.wait_for_messages(0.3) is False
    watcher: Any = storage._watcher
    await asyncio.wait_for(_until(lambda: watcher.unsupported), 10)
    await _write(outbox, [_message()])
    assert await storage.wait_for_messages(10.0) is True
    await storage.close_wake_up()


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_fetch_pending_writers_clocks_skewed_expect_commit_order_per_key(outbox: MongoOutbox) -> None:
    """Two writers 5 s apart on their clocks: A committed before B is claimed first (the server orders saves)."""
    now = datetime.now(UTC)
    # Writer A's host runs 5 s ahead: its message says it was created after B's.
    a = OutboxMessage(uuid4(), "OrderPlaced", b"{}", {}, now + timedelta(seconds=5), partition_key="k")
    b = OutboxMessage(uuid4(), "OrderPaid", b"{}", {}, now, partition_key="k")
    await _write(outbox, [a])
    await _write(outbox, [b])
    first = await outbox.storage().fetch_pending(1, MAX_RETRY)
    assert [m.id for m in first] == [a.id], "a later commit of the key was claimed first (order by a client clock)"
    raw_a, raw_b = await outbox.raw.find_one({"_id": a.id}), await outbox.raw.find_one({"_id": b.id})
    assert raw_a["saved_at"] <= raw_b["saved_at"] < raw_a["created_at"], (raw_a, raw_b)


async def test_fetch_pending_documents_from_before_seq_expect_first_in_creation_order(outbox: MongoOutbox) -> None:
    """Documents the previous version wrote (no ``saved_at``) keep their order and come before newer saves of their key."""
    older, old = _message("k"), _message("k")
    await _write(outbox, [older, old])
    await outbox.raw.update_many({}, {"$unset": {"saved_at": ""}})
    await outbox.raw.update_one({"_id": older.id}, {"$set": {"created_at": datetime.now(UTC) - timedelta(minutes=1)}})
    new = _message("k")
    await _write(outbox, [new])
    storage = outbox.storage()
    order = [m.id for m in await storage.fetch_pending(1, MAX_RETRY)]
    await storage.mark_published(order[0])
    order += [m.id for m in await storage.fetch_pending(1, MAX_RETRY)]
    await storage.mark_published(order[1])
    order += [m.id for m in await storage.fetch_pending(1, MAX_RETRY)]
    assert order == [older.id, old.id, new.id]
