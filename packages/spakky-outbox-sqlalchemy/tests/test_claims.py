"""Claims on every dialect: leases and renewal, key runs, undecodable rows (port v2)."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from spakky.outbox.backend.claims import key_run
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.testing.waiting import until
from spakky.plugins.outbox_sqlalchemy.operations import KEYS_PER_BATCH, OutboxSql
from spakky.plugins.outbox_sqlalchemy.storage import AsyncSqlAlchemyOutboxStorage
from sqlalchemy import Connection, text

from .conftest import (
    ASYNC_DRIVERS,
    AsyncOutbox,
    OpenOutbox,
    driver_url,
    message,
    opened_outbox,
)

DEADLINE_SECONDS = 60.0
"""Generous: server clocks, two loaded cores."""


def _ids(messages: Sequence[OutboxMessage]) -> list[object]:
    return [m.id for m in messages]


# --- liveness --------------------------------------------------------------------


async def _claimed(
    outboxes: OpenOutbox, *, lease: float, timeout: float
) -> tuple[AsyncOutbox, AsyncSqlAlchemyOutboxStorage, AsyncSqlAlchemyOutboxStorage, OutboxMessage]:
    """An outbox with that claim lease and timeout holding one message the first of two storages claimed."""
    outbox = await outboxes(claim_lease_seconds=lease, claim_timeout_seconds=timeout)
    holder, other = outbox.storage(), outbox.storage()
    sent = message()
    await outbox.write([sent])
    assert _ids(await holder.fetch_pending(10, 5)) == [sent.id]
    return outbox, holder, other, sent


async def test_lease_lapsed_expect_claim_free_long_before_claim_timeout(
    outboxes: OpenOutbox,
) -> None:
    """An unrenewed claim ends with its lease; the old holder is fenced out."""
    outbox, dead, alive, sent = await _claimed(outboxes, lease=1.0, timeout=3600.0)
    taken = await until(lambda: alive.fetch_pending(10, 5), bool, timeout=DEADLINE_SECONDS)
    assert _ids(taken) == [sent.id]
    assert await dead.renew_claims([sent.id]) == 0
    await dead.mark_published(sent.id)
    assert (await outbox.rows())[sent.id].published_at is None


async def test_renew_claims_expect_lease_pushed_and_claim_kept(
    outboxes: OpenOutbox,
) -> None:
    """A renewal moves ``lease_until`` later; meanwhile nobody else can claim."""
    outbox, holder, other, sent = await _claimed(outboxes, lease=30.0, timeout=3600.0)
    unknown = message()
    first = (await outbox.rows())[sent.id].lease_until

    async def renewed_lease() -> object:
        assert await holder.renew_claims([sent.id, unknown.id]) == 1
        return (await outbox.rows())[sent.id].lease_until

    await until(renewed_lease, lambda lease: lease > first, timeout=DEADLINE_SECONDS)
    assert await other.fetch_pending(10, 5) == []
    assert await other.renew_claims([sent.id]) == 0
    assert await holder.renew_claims([]) == 0


async def test_renew_claims_expect_never_past_claim_timeout(
    outboxes: OpenOutbox,
) -> None:
    """Renewals cap the lease at the claim timeout, after which others take over."""
    outbox, holder, other, sent = await _claimed(outboxes, lease=3600.0, timeout=2.0)
    assert await holder.renew_claims([sent.id]) == 1
    row = (await outbox.rows())[sent.id]
    assert (row.lease_until - row.claimed_at).total_seconds() <= 2.0
    taken = await until(lambda: other.fetch_pending(10, 5), bool, timeout=DEADLINE_SECONDS)
    assert _ids(taken) == [sent.id]
    assert await holder.renew_claims([sent.id]) == 0


async def test_stats_lapsed_claim_expect_not_counted_until_renewed(
    outboxes: OpenOutbox,
) -> None:
    """Only live claims count; the holder may renew a lapsed claim nobody took."""
    outbox, holder, _, sent = await _claimed(outboxes, lease=3.0, timeout=3600.0)
    await until(holder.stats, lambda stats: stats.claimed == 0, timeout=DEADLINE_SECONDS)
    assert (await outbox.rows())[sent.id].claimed_by == holder.owner_token
    assert await holder.renew_claims([sent.id]) == 1
    assert (await holder.stats()).claimed == 1


async def test_sync_renew_claims_expect_only_own_live_claims(outboxes: OpenOutbox) -> None:
    """The sync storage renews like the async one."""
    outbox = await outboxes(claim_lease_seconds=30.0, claim_timeout_seconds=60.0)
    sync = outbox.sync()
    sent = message()
    await outbox.write([sent])
    holder, other = sync.storage(), sync.storage()
    assert _ids(await asyncio.to_thread(holder.fetch_pending, 10, 5)) == [sent.id]
    assert await asyncio.to_thread(holder.renew_claims, [sent.id]) == 1
    assert await asyncio.to_thread(other.renew_claims, [sent.id]) == 0


# --- key runs ----------------------------------------------------------------------


async def test_fetch_pending_deep_keys_expect_runs_of_few_keys_left_for_others(
    any_outbox: AsyncOutbox,
) -> None:
    """6 keys x 6 interleaved messages, limit 6: A spans few keys, B gets others."""
    sent = [message(f"key{k}") for _ in range(6) for k in range(6)]
    await any_outbox.write(sent)
    first, second = any_outbox.storage(), any_outbox.storage()
    a = await first.fetch_pending(6, 5)
    b = await second.fetch_pending(6, 5)
    a_keys, b_keys = {m.partition_key for m in a}, {m.partition_key for m in b}
    assert len(a) == 6 and len(a_keys) <= 3
    assert b and not (a_keys & b_keys)
    for claim in (a, b):
        for key in {m.partition_key for m in claim}:
            in_order = [m.id for m in sent if m.partition_key == key]
            got = [m.id for m in claim if m.partition_key == key]
            assert got == in_order[: len(got)], "a key's part must be its oldest messages"


async def test_fetch_pending_many_single_message_keys_expect_one_claim_takes_all(
    any_outbox: AsyncOutbox,
) -> None:
    """100 keys of one message each: a claim of 100 takes them all (several key walks)."""
    sent = [message(f"k{index:03d}") for index in range(100)]
    await any_outbox.write(sent)
    claimed = await any_outbox.storage().fetch_pending(100, 5)
    assert _ids(claimed) == _ids(sent)


async def test_fetch_pending_mixed_lanes_expect_save_order_and_limit(
    any_outbox: AsyncOutbox,
) -> None:
    """Keyless and keyed messages merge by save order; the cut keeps each key a prefix."""
    sent = [message(None if index % 3 == 0 else f"k{index % 2}") for index in range(30)]
    await any_outbox.write(sent)
    claimed = await any_outbox.storage().fetch_pending(12, 5)
    assert len(claimed) == 12
    positions = [_ids(sent).index(m.id) for m in claimed]
    assert positions == sorted(positions)
    for key in ("k0", "k1"):
        in_order = [m.id for m in sent if m.partition_key == key]
        got = [m.id for m in claimed if m.partition_key == key]
        assert got == in_order[: len(got)]


async def test_fetch_pending_byte_budget_after_keyless_claim_expect_keyed_fill_within_budget(
    outboxes: OpenOutbox,
) -> None:
    """Keyless messages then a key's run share one claim's byte budget (PostgreSQL: one-statement keyless claim first)."""
    budget = 4096
    part = budget * 3 // 10
    outbox = await outboxes(batch_max_bytes=budget)
    storage = outbox.storage()
    await outbox.write([message()])
    # A claim that sees no keyed message: PostgreSQL claims keyless-first next.
    await storage.mark_published_many(_ids(await storage.fetch_pending(100, 5)))
    sent = [replace(message(key), payload=b"x" * part) for key in (None, None, "k", "k")]
    await outbox.write(sent)
    claimed = await storage.fetch_pending(100, 5)
    assert _ids(claimed) == _ids(sent[:3])
    await storage.mark_published_many(_ids(claimed))
    assert _ids(await storage.fetch_pending(100, 5)) == _ids(sent[3:])


@pytest.fixture(params=[d for d in ASYNC_DRIVERS if not d.startswith("sqlite")])
async def locking_outbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncOutbox]:
    """An outbox on each database whose claims lock rows (SKIP LOCKED), not the whole file."""
    async with opened_outbox(driver_url(request, request.param, tmp_path)) as outbox:
        yield outbox


async def _held_and_free(outbox: AsyncOutbox) -> tuple[list[OutboxMessage], list[OutboxMessage]]:
    """Ten messages of key ``k1`` (to be held by another claim) and ten of ``k2``, saved in one transaction."""
    held, free = [message("k1") for _ in range(10)], [message("k2") for _ in range(10)]
    await outbox.write(held + free)
    return held, free


async def test_fetch_pending_candidates_taken_concurrently_expect_next_keys_claimed(
    locking_outbox: AsyncOutbox,
) -> None:
    """A claim whose every candidate another claim holds locked walks on to free keys, not empty."""
    held, free = await _held_and_free(locking_outbox)
    table = locking_outbox.config.table_name
    async with locking_outbox.connections.connection.connect() as connection:
        seqs = (await connection.execute(text(f"SELECT seq FROM {table} WHERE partition_key = 'k1'"))).scalars().all()
        await connection.commit()
        # Another relay's claim in flight: k1's run locked row by row (a primary key
        # lookup each; MariaDB may scan a whole index for a list and lock every row).
        other = await connection.execution_options(isolation_level="READ COMMITTED")
        await other.begin()
        for seq in seqs:
            await other.execute(text(f"SELECT seq FROM {table} WHERE seq = :seq FOR UPDATE"), {"seq": seq})
        claimed = await locking_outbox.storage().fetch_pending(10, 5)
        await other.rollback()
    assert _ids(claimed) == _ids(free), "the claim must go past candidates locked by a concurrent claim"
    later = await locking_outbox.storage().fetch_pending(10, 5)
    assert _ids(later) == _ids(held)


async def test_fetch_pending_cursor_expect_keys_served_in_rotation(
    any_outbox: AsyncOutbox,
) -> None:
    """Keys the batch had no room for come first in the next claim of the same relay."""
    sent = [message(f"key{k}") for _ in range(12) for k in range(4)]
    await any_outbox.write(sent)
    relay = any_outbox.storage()
    seen: list[str | None] = []
    for _ in range(4):
        claimed = await relay.fetch_pending(10, 5)
        assert len({m.partition_key for m in claimed}) == 1  # one run of 10 fills it
        seen.append(claimed[0].partition_key)
        await relay.mark_published_many(_ids(claimed))
    assert sorted(seen) == ["key0", "key1", "key2", "key3"]


@pytest.mark.parametrize(("keys", "depth", "limit"), [(300, 1, 10), (12, 30, 10)])
async def test_keyed_lane_any_backlog_expect_keys_visited_bounded_by_batch(
    any_outbox: AsyncOutbox, keys: int, depth: int, limit: int
) -> None:
    """However many keys wait, one claim visits at most a few per batch slot."""
    await any_outbox.write([message(f"k{k:04d}") for _ in range(depth) for k in range(keys)])
    storage = any_outbox.storage()
    sql: OutboxSql = storage._core.sql  # pyright: ignore[reportPrivateUsage]
    visited = await _visit(any_outbox, storage, sql, limit)
    assert len(visited) <= KEYS_PER_BATCH * limit
    if depth >= key_run(limit):
        assert len(visited) == 1, "deep keys: one key's run fills the batch"
    else:
        assert sum(len(seqs) for _, seqs in visited) >= limit


async def _visit(
    outbox: AsyncOutbox, storage: AsyncSqlAlchemyOutboxStorage, sql: OutboxSql, limit: int
) -> list[tuple[str, list[int]]]:
    base = {"max_retry": 5, "owner": storage.owner_token} | sql._durations()  # pyright: ignore[reportPrivateUsage]

    def visit(connection: Connection) -> list[tuple[str, list[int]]]:
        _, visited = sql._keyed_lane(connection, limit, base)  # pyright: ignore[reportPrivateUsage]
        return visited

    async with outbox.connections.connection.connect() as connection:
        return await connection.run_sync(visit)


# --- undecodable rows --------------------------------------------------------------


async def test_fetch_pending_undecodable_headers_expect_abandoned_rest_returned(
    any_outbox: AsyncOutbox,
) -> None:
    """A row whose headers are not a JSON object is abandoned with the reason; others come."""
    first, damaged, last = message("k"), message("k"), message()
    await any_outbox.write([first, damaged, last])
    table = any_outbox.config.table_name
    json_array = "CAST('[1, 2]' AS JSON)" if "postgresql" in any_outbox.url else "'[1, 2]'"
    await any_outbox.execute(
        f"UPDATE {table} SET headers = {json_array} WHERE seq = "
        f"(SELECT seq FROM (SELECT seq FROM {table} ORDER BY seq LIMIT 1 OFFSET 1) AS s)"
    )
    storage = any_outbox.storage()
    assert _ids(await storage.fetch_pending(10, 5)) == [first.id, last.id]
    row = (await any_outbox.rows())[damaged.id]
    assert row.abandoned_at is not None and row.claimed_by is None
    assert row.last_error.startswith("undecodable stored message: ValueError: headers are not a JSON object")
    listed = await storage.list_abandoned()
    assert [(m.id, m.headers) for m in listed] == [(damaged.id, {})]


async def test_fetch_pending_sqlite_invalid_json_text_expect_abandoned(
    sqlite_outbox: AsyncOutbox,
) -> None:
    """SQLite keeps any text in a JSON column; text that is not JSON is abandoned too."""
    kept, damaged = message(), message()
    await sqlite_outbox.write([kept, damaged])
    table = sqlite_outbox.config.table_name
    await sqlite_outbox.execute(
        f"UPDATE {table} SET headers = '{{not json' WHERE seq = (SELECT MAX(seq) FROM {table})"
    )
    assert _ids(await sqlite_outbox.storage().fetch_pending(10, 5)) == [kept.id]
    error = (await sqlite_outbox.rows())[damaged.id].last_error
    assert error.startswith("undecodable stored message: JSONDecodeError")


async def test_fetch_pending_during_other_claim_expect_other_keys_claimed(
    locking_outbox: AsyncOutbox,
) -> None:
    """While one relay's claim transaction is open, another relay claims the keys it did not take."""
    first_key, second_key = await _held_and_free(locking_outbox)
    first, second = locking_outbox.storage(), locking_outbox.storage()
    sql = first._core.sql  # pyright: ignore[reportPrivateUsage] - to hold the claim open
    async with locking_outbox.connections.connection.connect() as connection:
        await connection.begin()
        taken = await connection.run_sync(lambda c: sql.claim(c, 10, 5))
        claimed = await second.fetch_pending(10, 5)
        await connection.rollback()
    assert _ids(taken) == _ids(first_key)
    assert _ids(claimed) == _ids(second_key), "a claim in flight must lock only the rows it takes"
