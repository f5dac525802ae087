"""Rules of ``Capability.ADMINISTRATION``: stats, list and requeue abandoned, purge published, key heads, one message, relay claims."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.storage import (
    IAsyncOutboxAdministration,
    IAsyncOutboxLiveness,
    IAsyncOutboxRetryScheduling,
    IAsyncOutboxStorage,
)

from .support import *  # the rule-writing kit (support.__all__)


async def _one_of_each_state(
    harness: AbstractOutboxHarness,
) -> tuple[IAsyncOutboxStorage, tuple[OutboxMessage, ...]]:
    """One published, one abandoned (after spending retries), one claimed, one pending message.

    Returns the instance holding the claim, and the four messages in that order.
    """
    published, abandoned = message(name="published"), message(name="abandoned")
    claimed, pending = message(name="claimed"), message(name="pending")
    await harness.write([published, abandoned, claimed, pending])
    storage = harness.new_storage()
    got = await storage.fetch_pending(3, MAX_RETRY)
    assert ids(got) == [published.id, abandoned.id, claimed.id], rule("oldest first", names(got))
    await storage.mark_published(published.id)
    await storage.increment_retry(abandoned.id)
    await storage.increment_retry(abandoned.id)
    await storage.mark_abandoned(abandoned.id)
    return storage, (published, abandoned, claimed, pending)


@capability(Capability.ADMINISTRATION)
async def test_stats_expect_counts_by_state(outbox_harness: AbstractOutboxHarness) -> None:
    """Stats count pending, claimed, published and abandoned messages."""
    holder, (_, _, claimed, _) = await _one_of_each_state(outbox_harness)
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxAdministration)
    if isinstance(holder, IAsyncOutboxLiveness):
        # A live relay renews while it works; the claim must not lapse under a slow machine.
        await holder.renew_claims([claimed.id])
    stats = await storage.stats()
    counts = (stats.pending, stats.claimed, stats.published, stats.abandoned)
    assert counts == (2, 1, 1, 1), rule(
        "stats count pending (claimed included), claimed, published and abandoned messages",
        f"pending, claimed, published, abandoned = {counts}, expected (2, 1, 1, 1)",
    )
    age = stats.oldest_pending_age_seconds
    assert age is not None and 0 <= age < 3600, rule("stats measure the oldest pending message's age", age)


@capability(Capability.ADMINISTRATION)
async def test_stats_expired_claim_expect_not_counted_claimed(outbox_harness: AbstractOutboxHarness) -> None:
    """A claim that ended is counted as pending, not claimed."""
    await outbox_harness.write([message()])
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxAdministration)
    await storage.fetch_pending(1, MAX_RETRY)
    await eventually(
        outbox_harness,
        storage.stats,
        lambda s: s.claimed == 0 and s.pending == 1,
        timeout=outbox_harness.claim_timeout_seconds * 3,
        what="stats to stop counting an expired claim as claimed (rule: only live claims count)",
    )


@capability(Capability.ADMINISTRATION)
async def test_list_abandoned_expect_messages_with_reason(outbox_harness: AbstractOutboxHarness) -> None:
    """Listing abandoned messages returns them with their last error."""
    sent = message(name="refused")
    await outbox_harness.write([sent, message()])
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxAdministration)
    assert isinstance(storage, IAsyncOutboxRetryScheduling)
    await storage.fetch_pending(1, MAX_RETRY)
    await storage.abandon(sent.id, "refused: too large")
    listed = await storage.list_abandoned()
    got = [(m.id, m.last_error, m.abandoned_at is not None) for m in listed]
    assert got == [(sent.id, "refused: too large", True)], rule(
        "list_abandoned returns the abandoned messages with reason and abandoned_at",
        [(m.event_name, m.last_error, m.abandoned_at) for m in listed],
    )


@capability(Capability.ADMINISTRATION)
async def test_requeue_abandoned_expect_pending_with_fresh_budget(outbox_harness: AbstractOutboxHarness) -> None:
    """Requeued messages are claimable again with their retry count reset."""
    _, (_, abandoned, _, _) = await _one_of_each_state(outbox_harness)
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxAdministration)
    count = await storage.requeue_abandoned()
    assert count == 1, rule("requeue_abandoned reports how many it requeued", count)
    raw = (await raw_by_id(outbox_harness))[abandoned.id]
    state = (raw.abandoned, raw.retry_count, raw.claimed)
    assert state == (False, 0, False), rule(
        "a requeued message is pending again, unclaimed, with a fresh retry budget",
        f"abandoned, retry_count, claimed = {state} (it had spent 2 retries)",
    )
    claimed = await storage.fetch_pending(10, MAX_RETRY)
    got = [(m.event_name, m.retry_count) for m in claimed if m.id == abandoned.id]
    assert got == [("abandoned", 0)], rule(
        "a requeued message is claimable with retry_count 0", [(m.event_name, m.retry_count) for m in claimed]
    )
    assert await storage.requeue_abandoned([uuid4()]) == 0, rule("requeueing unknown ids requeues nothing", "counted")


@capability(Capability.ADMINISTRATION)
async def test_requeue_abandoned_limit_expect_bounded_batches(outbox_harness: AbstractOutboxHarness) -> None:
    """Requeue works in bounded batches: each call requeues at most ``limit``, oldest first."""
    sent = [message(name=f"a{i}") for i in range(5)]
    await outbox_harness.write(sent)
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxAdministration)
    await storage.fetch_pending(5, MAX_RETRY)
    for m in sent:
        await storage.mark_abandoned(m.id)
    counts = [await storage.requeue_abandoned(limit=2) for _ in range(4)]
    assert counts == [2, 2, 1, 0], rule("requeue_abandoned(limit=2) requeues at most 2 per call", counts)
    claimed = await storage.fetch_pending(10, MAX_RETRY)
    assert ids(claimed) == ids(sent), rule("requeued messages come back in their original order", names(claimed))


@capability(Capability.ADMINISTRATION)
async def test_purge_published_age_expect_cutoff_on_storage_clock(outbox_harness: AbstractOutboxHarness) -> None:
    """An age cutoff (retention) counts on the storage's clock, the clock ``published_at`` comes from (issue 17.19).

    A relay whose own clock runs ahead must never purge what the storage
    published less than the retention ago: the harness clock is the storage's,
    and it moves without the caller's clock (or with it, on a real server).
    """
    sent = message()
    await outbox_harness.write([sent])
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxAdministration)
    await acknowledge(storage, ids(await storage.fetch_pending(10, MAX_RETRY)))
    kept = await storage.purge_published(timedelta(hours=1))
    assert kept == 0, rule("an age cutoff keeps what was published within that age", f"deleted {kept}")
    await outbox_harness.advance(1.0)
    purged = await storage.purge_published(timedelta(seconds=0.5))
    left = await raw_by_id(outbox_harness)
    assert purged == 1 and sent.id not in left, rule(
        "an age cutoff deletes what the storage's clock published longer ago than that",
        f"deleted {purged}, still stored: {sent.id in left}",
    )


@capability(Capability.ADMINISTRATION)
async def test_purge_published_expect_only_older_published_deleted(outbox_harness: AbstractOutboxHarness) -> None:
    """Purging deletes published messages before the cutoff and nothing else."""
    _, (_, abandoned, claimed, pending) = await _one_of_each_state(outbox_harness)
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxAdministration)
    early = await storage.purge_published(datetime.now(UTC) - timedelta(days=1))
    assert early == 0, rule("purge keeps messages published after the cutoff", f"deleted {early}")
    late = await storage.purge_published(datetime.now(UTC) + timedelta(days=1))
    assert late == 1, rule("purge deletes published messages before the cutoff", f"deleted {late}")
    left = await outbox_harness.raw_records()
    assert {r.id for r in left} == {abandoned.id, claimed.id, pending.id}, rule(
        "purge deletes only published messages", names(left)
    )


@capability(Capability.ADMINISTRATION)
async def test_key_heads_expect_oldest_head_first_with_what_holds_it(outbox_harness: AbstractOutboxHarness) -> None:
    """Key heads: one per key with undelivered messages, oldest first, with the live claim or the retry holding it; paged."""
    a1, b1, d1, e1 = message("a", name="a1"), message("b", name="b1"), message("d", name="d1"), message("e", name="e1")
    holders: list[IAsyncOutboxStorage] = []
    for sent in (a1, b1, d1, e1):
        await outbox_harness.write([sent])
        holder = outbox_harness.new_storage()
        assert isinstance(holder, IAsyncOutboxRetryScheduling)
        got: list[OutboxMessage] = []
        for _ in range(20):  # a storage spreading keys may visit the new key on a later claim
            got = await holder.fetch_pending(1, MAX_RETRY)
            if got:
                break
        assert ids(got) == [sent.id], rule("the only claimable message is claimed", names(got))
        holders.append(holder)
    claimer, retrier, publisher, abandoner = holders
    assert isinstance(retrier, IAsyncOutboxRetryScheduling) and isinstance(abandoner, IAsyncOutboxRetryScheduling)
    await retrier.schedule_retry(b1.id, 3600, "broker said no")
    await publisher.mark_published(d1.id)
    await abandoner.abandon(e1.id, "refused")
    c1 = message("c", name="c1")
    await outbox_harness.write([message(name="keyless"), message("a", name="a2"), c1, message("b", name="b2")])
    if isinstance(claimer, IAsyncOutboxLiveness):
        await claimer.renew_claims([a1.id])
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxAdministration)
    heads = await storage.key_heads(10)
    assert [h.message.id for h in heads] == [a1.id, b1.id, c1.id], rule(
        "key_heads lists each key's oldest undelivered message, oldest first, no keyless, published or abandoned one",
        names(h.message for h in heads),
    )
    claimed, retrying, free = heads
    assert claimed.claimed_by is not None and claimed.lease_until is not None, rule(
        "a head held by a live claim names its owner and when the claim ends", claimed
    )
    assert (retrying.claimed_by, retrying.message.retry_count, retrying.message.last_error) == (
        None, 1, "broker said no"
    ) and retrying.not_before is not None, rule(
        "a head waiting for a retry has no claim, its attempts, last error and retry time", retrying
    )
    assert (free.claimed_by, free.lease_until, free.not_before) == (None, None, None), rule(
        "a head nobody holds has no claim and no retry time", free
    )
    first = await storage.key_heads(1)
    rest = await storage.key_heads(10, after=first[-1].message.id)
    paged = [h.message.id for h in [*first, *rest]]
    assert paged == [a1.id, b1.id, c1.id], rule(
        "key_heads(limit, after=last head of the page) goes on after it", [h.message.event_name for h in [*first, *rest]]
    )


@capability(Capability.ADMINISTRATION)
async def test_get_message_expect_stored_fields_and_what_holds_it(outbox_harness: AbstractOutboxHarness) -> None:
    """get_message returns any message as stored (payload and headers too), with a live claim or a retry only while one holds."""
    holder, (published, abandoned, claimed, pending) = await _one_of_each_state(outbox_harness)
    retried = message("k", name="retried", payload=b"\x00\xff binary", headers={"authorization": "Bearer x", "n": "1"})
    await outbox_harness.write([retried])
    retrier = outbox_harness.new_storage()
    if isinstance(retrier, IAsyncOutboxRetryScheduling):
        got = await retrier.fetch_pending(10, MAX_RETRY)
        assert retried.id in ids(got), rule("the retried message is claimable", names(got))
        await retrier.schedule_retry(retried.id, 3600, "broker said no")
        await retrier.release([m.id for m in got if m.id != retried.id])
    if isinstance(holder, IAsyncOutboxLiveness):
        await holder.renew_claims([claimed.id])
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxAdministration)
    raw = await raw_by_id(outbox_harness)
    for sent in (published, abandoned, claimed, pending, retried):
        detail = await storage.get_message(sent.id)
        assert detail is not None, rule("get_message finds every stored message, in any state", sent.event_name)
        got, stored = detail.message, raw[sent.id]
        seen = (got.event_name, got.payload, got.headers, got.partition_key, got.retry_count, got.last_error)
        assert seen == (
            stored.event_name, stored.payload, stored.headers, stored.partition_key, stored.retry_count,
            stored.last_error,
        ), rule("get_message returns the message as stored, payload and headers included", (seen, stored))
        assert got.created_at == stored.created_at, rule("get_message returns created_at as stored", got.created_at)
        assert (got.published_at is not None, got.abandoned_at is not None) == (stored.published, stored.abandoned), (
            rule("get_message says whether the message was published or abandoned", (sent.event_name, got))
        )
        live = sent is claimed
        assert (detail.claimed_by is not None, detail.lease_until is not None) == (live, live), rule(
            "get_message names the owner and end of a live claim, and only of a live claim", (sent.event_name, detail)
        )
        assert not live or stored.claimed, rule("a message reported claimed is claimed in storage", stored)
        waiting = sent is retried and isinstance(retrier, IAsyncOutboxRetryScheduling)
        assert (detail.not_before is not None) == waiting, rule(
            "get_message gives the retry time only while a scheduled retry waits", (sent.event_name, detail)
        )
    assert await storage.get_message(uuid4()) is None, rule("get_message of an unknown id returns None", "a message")


@capability(Capability.ADMINISTRATION)
async def test_relay_claims_expect_live_claims_by_relay(outbox_harness: AbstractOutboxHarness) -> None:
    """relay_claims gives each relay instance holding live claims, how many it holds and until when; released and settled claims are no one's."""
    sent = [message(name=f"r{n}") for n in range(6)]
    await outbox_harness.write(sent)
    first, second, releaser, publisher = (outbox_harness.new_storage() for _ in range(4))
    two, one = await first.fetch_pending(2, MAX_RETRY), await second.fetch_pending(1, MAX_RETRY)
    let_go, done = await releaser.fetch_pending(1, MAX_RETRY), await publisher.fetch_pending(1, MAX_RETRY)
    assert (len(two), len(one), len(let_go), len(done)) == (2, 1, 1, 1), rule(
        "each instance claims what it asks for", names([*two, *one, *let_go, *done])
    )
    if isinstance(releaser, IAsyncOutboxRetryScheduling):
        await releaser.release(ids(let_go))
    else:
        await releaser.mark_published(let_go[0].id)
    await publisher.mark_published(done[0].id)
    for holder, held in ((first, two), (second, one)):
        if isinstance(holder, IAsyncOutboxLiveness):
            await holder.renew_claims(ids(held))
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxAdministration)
    relays = await storage.relay_claims()
    assert [r.held for r in relays] == [2, 1], rule(
        "relay_claims lists one entry per relay instance with live claims, most held first", relays
    )
    assert all(r.owner for r in relays) and relays[0].owner != relays[1].owner, rule(
        "each relay instance is named by its own owner token", relays
    )
    raw = await raw_by_id(outbox_harness)
    held_ids = ids([*two, *one])
    assert all(raw[i].claimed and not raw[i].published for i in held_ids), rule(
        "the claims relay_claims counts are claims in storage", [raw[i] for i in held_ids]
    )
