"""The MongoDB inbox beyond the shared rules: indexes, TTL window, conflicts, sessions of its own."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from spakky.outbox.inbox.config import InboxConfig
from spakky.outbox.inbox.error import InboxConflictError, InvalidInboxKeyError
from spakky.outbox.ports.inbox import LeaseOutcome
from spakky.plugins.outbox_mongodb.error import MongoTransactionRetryableError
from spakky.plugins.outbox_mongodb.inbox import AsyncMongoInboxStorage
from spakky.plugins.outbox_mongodb.transaction import (
    AsyncMongoTransaction,
    current_async_session,
)
from spakky_outbox_testservices.resolve import MongoServer

from .conftest import refuse_commit
from .test_inbox_rules import DATABASE, Flavour, MongoInboxHarness

WEEK = 7 * 24 * 3600


class _RollbackError(Exception):
    """Makes a transaction roll back."""


@pytest.fixture
async def box(mongodb_server: MongoServer) -> AsyncIterator[MongoInboxHarness]:
    """A fresh inbox collection (PyMongo async), dropped afterwards."""
    harness = MongoInboxHarness(mongodb_server, Flavour.PYMONGO)
    try:
        yield harness
    finally:
        await harness.drop()


def _inbox(box: MongoInboxHarness, window_seconds: float | None = None) -> AsyncMongoInboxStorage:
    config = InboxConfig()
    if window_seconds is not None:
        config = config.model_copy(update={"window_seconds": window_seconds})
    return AsyncMongoInboxStorage(box.connections, config)


async def test_mongodb_inbox_first_record_expect_key_ttl_and_leased_indexes(box: MongoInboxHarness) -> None:
    """The first record creates the unique key, the TTL on the window (7 days) and the leased index; a new window moves the TTL."""
    assert await box.handle(_inbox(box), "c", "m1", "e1")
    indexes = await box.raw.index_information()
    key, window, leased = (
        indexes["spakky_outbox_inbox_key"],
        indexes["spakky_outbox_inbox_window"],
        indexes["spakky_outbox_inbox_leased"],
    )
    assert (list(key["key"]), key["unique"]) == ([("consumer", 1), ("message_id", 1)], True)
    assert (list(window["key"]), window["expireAfterSeconds"]) == ([("recorded_at", 1)], WEEK)
    assert dict(leased["partialFilterExpression"]) == {"lease_owner": {"$type": "string"}}
    await _inbox(box, window_seconds=3600).acquire_lease("c", "m2", 30)
    assert (await box.raw.index_information())["spakky_outbox_inbox_window"]["expireAfterSeconds"] == 3600


async def test_mongodb_inbox_duplicate_expect_transaction_still_commits(box: MongoInboxHarness) -> None:
    """A skipped duplicate leaves its transaction usable: later writes in it commit (a duplicate-key error would abort it)."""
    inbox = _inbox(box)
    assert await box.handle(inbox, "c", "m1", "e1")
    async with AsyncMongoTransaction(box.config, box.connections):
        assert await inbox.record("c", "m1") is False
        session = current_async_session()
        await session.client[DATABASE][box.effects_name].insert_one({"effect": "after-skip"}, session=session)
    assert await box.effects() == ["after-skip", "e1"]
    assert len(await box.records()) == 1


async def test_mongodb_inbox_race_expect_conflict_where_the_server_detects_it(
    box: MongoInboxHarness, mongodb_server: MongoServer
) -> None:
    """A second transaction recording a message another open one recorded gets InboxConflictError.

    A real server refuses the second upsert (write conflict); the mongoeco
    wire server lets it through and fails the commit, which the inbox then
    recognises by finding the record stored.
    """
    first, second = _inbox(box), _inbox(box)
    holds = {name: (asyncio.Event(), asyncio.Event()) for name in ("first", "second")}

    def hold(name: str) -> Any:
        async def held() -> None:
            recorded, release = holds[name]
            recorded.set()
            await release.wait()

        return held

    winner = asyncio.create_task(box.handle(first, "c", "m1", "first", before_commit=hold("first")))
    await asyncio.wait_for(holds["first"][0].wait(), 10)
    if mongodb_server.wire:
        loser = asyncio.create_task(box.handle(second, "c", "m1", "second", before_commit=hold("second")))
        await asyncio.wait_for(holds["second"][0].wait(), 10)  # both recorded, neither committed
        holds["first"][1].set()
        assert await asyncio.wait_for(winner, 10) is True
        holds["second"][1].set()
        with pytest.raises(InboxConflictError):
            await asyncio.wait_for(loser, 10)
    else:
        with pytest.raises(InboxConflictError):
            await box.handle(second, "c", "m1", "second")
        holds["first"][1].set()
        assert await asyncio.wait_for(winner, 10) is True
    assert await box.effects() == ["first"]
    assert len(await box.records()) == 1
    assert box.connections.open_sessions == 0, "the loser's session must end"


async def test_mongodb_inbox_commit_fails_record_not_stored_expect_own_error(
    box: MongoInboxHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit failing for another reason keeps its own error: no record stored elsewhere, no InboxConflictError."""
    inbox = _inbox(box)
    with pytest.raises(MongoTransactionRetryableError):
        async with AsyncMongoTransaction(box.config, box.connections):
            assert await inbox.record("c", "m1")
            refuse_commit(monkeypatch)
    assert await box.records() == []


async def test_mongodb_inbox_lease_inside_transaction_expect_committed_at_once(box: MongoInboxHarness) -> None:
    """Lease operations use a session of their own: a lease taken inside a rolled-back transaction stays."""
    inbox = _inbox(box)
    try:
        async with AsyncMongoTransaction(box.config, box.connections):
            lease = await inbox.acquire_lease("c", "m1", 30)
            assert lease.outcome is LeaseOutcome.ACQUIRED
            raise _RollbackError
    except _RollbackError:
        pass
    assert [(r.message_id, r.leased) for r in await box.records()] == [("m1", True)]
    assert (await _inbox(box).acquire_lease("c", "m1", 30)).outcome is LeaseOutcome.BUSY


async def test_mongodb_inbox_stats_expect_counts_oldest_and_location(box: MongoInboxHarness) -> None:
    """Stats count records and unfinished leases and find the oldest; the location names the collection, no password."""
    inbox = _inbox(box)
    empty = await inbox.stats()
    assert (empty.records, empty.leased, empty.oldest_recorded_at) == (0, 0, None)
    for n in range(3):
        await box.handle(inbox, "c", f"m{n}", f"e{n}")
    await box.backdate("c", "m1", 3600)
    await inbox.acquire_lease("mailer", "m0", 30)
    stats = await inbox.stats()
    assert (stats.records, stats.leased) == (4, 1)
    assert stats.oldest_recorded_at is not None
    assert timedelta(minutes=59) < datetime.now(UTC) - stats.oldest_recorded_at < timedelta(minutes=61)
    assert inbox.location().endswith(f" {DATABASE}.{box.config.inbox_collection}")


async def test_mongodb_inbox_record_past_window_expect_removed_by_ttl(box: MongoInboxHarness) -> None:
    """A record older than the window is removed by the server's TTL index (its monitor runs every 60 s)."""
    inbox = _inbox(box)
    await box.handle(inbox, "c", "old", "e1")
    await box.handle(inbox, "c", "new", "e2")
    await box.backdate("c", "old", WEEK + 3600)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 180
    while await box.raw.count_documents({"message_id": "old"}):
        assert loop.time() < deadline, "the TTL index did not remove a record past the window within 180 s"
        await asyncio.sleep(1)
    assert [r.message_id for r in await box.records()] == ["new"]


async def test_mongodb_inbox_bad_key_expect_error_nothing_stored(box: MongoInboxHarness) -> None:
    """An empty or over-long consumer name or message identity is refused with our error."""
    inbox = _inbox(box)
    async with AsyncMongoTransaction(box.config, box.connections):
        with pytest.raises(InvalidInboxKeyError):
            await inbox.record("", "m1")
    with pytest.raises(InvalidInboxKeyError):
        await inbox.acquire_lease("c", "m" * 256, 30)
    assert await box.records() == []
