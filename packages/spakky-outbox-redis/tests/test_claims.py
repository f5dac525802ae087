"""Claims on a real Redis: leases and renewal, key runs, bounded cost, undecodable messages."""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from uuid import UUID, uuid4

import pytest
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.testing.draining import drain_claims
from spakky.outbox.testing.waiting import until
from spakky.plugins.outbox_redis import scripts
from spakky.plugins.outbox_redis.codec import save_arguments
from spakky_outbox_testservices.redis_servers import RedisServer, private_redis

from .conftest import (
    RedisOutbox,
    drop_outbox,
    make_outbox,
    new_message,
    save_all,
    save_one,
    saved,
)

MAX_RETRY = 5
DEADLINE = 10.0




async def test_fetch_pending_lease_lapsed_expect_taken_over_and_old_owner_fenced(
    outbox: RedisOutbox,
) -> None:
    """An unrenewed claim ends after its lease; the new owner has it, the old one can neither ack nor renew."""
    sent = await save_one(outbox)
    first, second = outbox.storage(), outbox.storage()
    assert [m.id for m in await first.fetch_pending(10, MAX_RETRY)] == [sent.id]
    assert await second.fetch_pending(10, MAX_RETRY) == []
    taken = await until(lambda: second.fetch_pending(10, MAX_RETRY), bool, timeout=DEADLINE)
    assert [m.id for m in taken] == [sent.id]
    assert await first.renew_claims([sent.id]) == 0
    await first.mark_published(sent.id)
    assert (await first.stats()).published == 0
    assert await second.renew_claims([sent.id]) == 1


async def test_renew_claims_expect_claim_kept_past_lease_until_claim_timeout(
    outbox: RedisOutbox,
) -> None:
    """Renewed every third of the lease, a claim outlives its lease, but never its claim timeout."""
    sent = await save_one(outbox)
    holder, other = outbox.storage(), outbox.storage()
    await holder.fetch_pending(1, MAX_RETRY)
    lease = outbox.outbox_config.claim_lease_seconds
    claimed = time.monotonic()
    taken_while_renewed: list[OutboxMessage] = []
    while await holder.renew_claims([sent.id]) == 1:
        taken_while_renewed += await other.fetch_pending(1, MAX_RETRY)
        assert time.monotonic() - claimed < DEADLINE, "renewal never stopped"
        await asyncio.sleep(lease / 3)
    # renewal stopped only at the claim timeout, well past the first lease
    assert time.monotonic() - claimed > lease * 1.5
    assert taken_while_renewed == []
    taken = await until(lambda: other.fetch_pending(1, MAX_RETRY), bool, timeout=DEADLINE)
    assert [m.id for m in taken] == [sent.id]


async def test_renew_claims_other_owner_expect_untouched(outbox: RedisOutbox) -> None:
    """An instance renews only its own claims: another owner's lease keeps its deadline."""
    sent = await save_one(outbox)
    holder, other = outbox.storage(), outbox.storage()
    await holder.fetch_pending(1, MAX_RETRY)
    inflight = f"{outbox.keys.outbox}:inflight"
    deadline = await outbox.raw.zscore(inflight, str(sent.id))
    assert await other.renew_claims([sent.id, uuid4()]) == 0
    assert await outbox.raw.zscore(inflight, str(sent.id)) == deadline
    assert await holder.renew_claims([]) == 0


async def test_renew_claims_lapsed_not_taken_expect_renewed_and_counted_again(
    outbox: RedisOutbox,
) -> None:
    """A lapsed claim nobody took over may be renewed; stats count only live claims."""
    sent = await save_one(outbox)
    holder = outbox.storage()
    await holder.fetch_pending(1, MAX_RETRY)
    assert (await holder.stats()).claimed == 1
    await until(holder.stats, lambda stats: stats.claimed == 0, timeout=DEADLINE)
    assert await holder.renew_claims([sent.id]) == 1
    assert (await holder.stats()).claimed == 1
    await holder.mark_published(sent.id)
    assert (await holder.stats()).published == 1


async def test_sync_renew_claims_expect_same_rules(outbox: RedisOutbox) -> None:
    """The synchronous storage renews only what it holds."""
    sent = await save_one(outbox)
    holder, other = outbox.sync_storage(), outbox.sync_storage()
    claimed = await asyncio.to_thread(holder.fetch_pending, 1, MAX_RETRY)
    assert [m.id for m in claimed] == [sent.id]
    assert await asyncio.to_thread(other.renew_claims, [sent.id]) == 0
    assert await asyncio.to_thread(holder.renew_claims, [sent.id]) == 1
    assert holder.renew_claims([]) == 0


async def test_fetch_pending_six_deep_keys_expect_runs_leave_keys_for_another_instance(
    outbox: RedisOutbox,
) -> None:
    """6 keys x 6 messages interleaved, batch 6: a claim spans few keys, a second instance gets others."""
    keys = [f"k{i}" for i in range(6)]
    await save_all(outbox, [new_message(key) for _ in range(6) for key in keys])
    first, second = outbox.storage(), outbox.storage()
    a = await first.fetch_pending(6, MAX_RETRY)
    b = await second.fetch_pending(6, MAX_RETRY)
    a_keys = {m.partition_key for m in a}
    b_keys = {m.partition_key for m in b}
    assert len(a) == 6 and len(a_keys) <= 3
    assert b and a_keys.isdisjoint(b_keys)


async def test_fetch_pending_many_single_message_keys_expect_one_claim_takes_all(
    outbox: RedisOutbox,
) -> None:
    """With 100 keys of one message each, one claim of 100 takes them all, oldest first."""
    sent = [new_message(f"key-{i}") for i in range(100)]
    await save_all(outbox, sent)
    claimed = await outbox.storage().fetch_pending(100, MAX_RETRY)
    assert [m.id for m in claimed] == [m.id for m in sent]


async def test_fetch_pending_deep_key_and_keyless_expect_run_of_ten_merged_by_age(
    outbox: RedisOutbox,
) -> None:
    """A deep key gives a run of at most ten; keyless messages fill the batch; order is save order."""
    deep = [new_message("deep") for _ in range(30)]
    keyless = [new_message() for _ in range(5)]
    await save_all(outbox, [*deep[:15], *keyless, *deep[15:]])
    claimed = await outbox.storage().fetch_pending(100, MAX_RETRY)
    assert [m.id for m in claimed] == [m.id for m in deep[:10]] + [m.id for m in keyless]


async def test_fetch_pending_corrupt_message_expect_abandoned_rest_returned(
    outbox: RedisOutbox,
) -> None:
    """A stored message that cannot be decoded is abandoned with the reason; the batch goes on."""
    head, follower, other = await saved(outbox, "k", "k", None)
    await outbox.raw.hset(outbox.keys.message(head.id), "headers", b"\xff{")
    storage = outbox.storage()
    claimed = await storage.fetch_pending(10, MAX_RETRY)
    assert [m.id for m in claimed] == [follower.id, other.id]
    fields = await outbox.raw.hgetall(outbox.keys.message(head.id))
    assert fields[b"last_error"].startswith(b"undecodable stored message: ")
    assert b"abandoned_at" in fields
    stats = await storage.stats()
    assert (stats.pending, stats.claimed, stats.abandoned) == (2, 2, 1)
    # listed with its reason: a listing never reads the damaged headers
    listed = await storage.list_abandoned()
    assert [(m.id, (m.last_error or "")[:27]) for m in listed] == [(head.id, "undecodable stored message:")]


async def test_mark_published_many_id_stored_as_other_text_expect_acknowledged_as_claimed(
    outbox: RedisOutbox,
) -> None:
    """A message another writer stored under its id in capitals is acknowledged by the text its claim read."""
    message = new_message()
    arguments = save_arguments(outbox.prefix, message)
    arguments[1] = str(message.id).upper()
    await outbox.raw.eval(scripts.SAVE, 1, outbox.keys.pending, *arguments)  # pyright: ignore[reportUnknownMemberType]
    storage = outbox.storage()
    claimed = await storage.fetch_pending(10, MAX_RETRY)
    assert [m.id for m in claimed] == [message.id]
    assert await storage.mark_published_many([m.id for m in claimed]) == 1
    assert (await storage.stats()).published == 1


async def test_mark_published_many_equal_ids_not_from_claim_expect_acknowledged(
    outbox: RedisOutbox,
) -> None:
    """Ids equal to the claimed ones but not the claim's own objects are written out and acknowledged."""
    first, second = await saved(outbox, None, "k")
    storage = outbox.storage()
    claimed = await storage.fetch_pending(10, MAX_RETRY)
    assert await storage.mark_published_many([UUID(str(m.id)) for m in claimed]) == 2
    assert (await storage.stats()).published == 2
    assert {m.id for m in claimed} == {first.id, second.id}


async def test_sync_fetch_pending_corrupt_message_expect_abandoned_rest_returned(
    outbox: RedisOutbox,
) -> None:
    """The synchronous storage sets undecodable messages aside too."""
    broken, fine = new_message(), new_message()
    await save_all(outbox, [broken, fine])
    await outbox.raw.hdel(outbox.keys.message(broken.id), "created_at")
    storage = outbox.sync_storage()
    claimed = await asyncio.to_thread(storage.fetch_pending, 10, MAX_RETRY)
    assert [m.id for m in claimed] == [fine.id]
    assert (await asyncio.to_thread(storage.stats)).abandoned == 1


_MB = 1_000_000
_BUDGET = 2 * 1024 * 1024
"""Two 1 MB payloads fit in the budget, three do not."""


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_fetch_pending_large_payloads_under_byte_budget_expect_bounded_claims_in_key_order(
    redis_url: str, flavour: str
) -> None:
    """20 x 1 MB over two keys and keyless under a 2 MB budget: every claim holds two, all delivered in key order."""
    outbox = make_outbox(redis_url, batch_max_bytes=_BUDGET)
    try:
        sent = [
            replace(new_message(("a", "b", None)[i % 3]), payload=bytes([i]) * _MB) for i in range(20)
        ]
        await save_all(outbox, sent)
        storage = outbox.sync_storage() if flavour == "sync" else outbox.storage()
        claims = await drain_claims(storage, len(sent), MAX_RETRY)
        assert [sum(len(m.payload) for m in claimed) for claimed in claims] == [2 * _MB] * 10
        delivered = [(m.id, m.payload) for claimed in claims for m in claimed]
        assert delivered == [(m.id, m.payload) for m in sent]
    finally:
        await drop_outbox(outbox)


_NOT_DATA = ("cmdstat_eval", "cmdstat_script", "cmdstat_config", "cmdstat_info", "cmdstat_hello", "cmdstat_client")


@pytest.fixture(scope="module")
def counted_server() -> Iterator[RedisServer]:
    """A private server whose command counters only this module's claims move."""
    with private_redis() as server:
        yield server


async def _commands_per_claim(server: RedisServer, backlog: int, *, keyed: bool) -> int:
    """Save ``backlog`` messages, then count the commands one claim of 100 runs."""
    outbox = make_outbox(server.url)
    try:
        await save_all(
            outbox,
            [new_message(f"key-{i % (backlog // 20)}" if keyed else None) for i in range(backlog)],
        )
        storage = outbox.storage()
        client = server.client()
        try:
            client.config_resetstat()
            assert len(await storage.fetch_pending(100, MAX_RETRY)) == 100
            stats = client.info("commandstats")
        finally:
            client.close()
        # data commands only: the scripts' own calls, not loading or calling them
        return sum(
            int(value["calls"])
            for name, value in stats.items()
            if not name.startswith(_NOT_DATA)
        )
    finally:
        await drop_outbox(outbox)


@pytest.mark.parametrize("keyed", [False, True], ids=["keyless", "keyed"])
async def test_fetch_pending_backlog_grows_expect_same_commands_per_claim(
    counted_server: RedisServer, keyed: bool
) -> None:
    """One claim runs as many Redis commands with 20,000 messages waiting as with 1,000."""
    small = await _commands_per_claim(counted_server, 1_000, keyed=keyed)
    large = await _commands_per_claim(counted_server, 20_000, keyed=keyed)
    assert small == large
