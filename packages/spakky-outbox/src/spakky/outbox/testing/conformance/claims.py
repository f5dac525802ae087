"""Rules of claims and acknowledgements (base level): oldest first, exclusive, fenced, budget spent."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from uuid import UUID

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.storage import IAsyncOutboxStorage

from .support import *  # the rule-writing kit (support.__all__)


async def _settle_first_of_two(
    harness: AbstractOutboxHarness,
    name: str,
    settle: Callable[[IAsyncOutboxStorage, UUID], Awaitable[None]],
) -> tuple[OutboxMessage, OutboxMessage, dict[UUID, RawOutboxRecord]]:
    """Write ``name`` and ``other``, claim both, ``settle`` the first; return both and the stored records."""
    settled, other = message(name=name), message(name="other")
    await harness.write([settled, other])
    storage = harness.new_storage()
    await storage.fetch_pending(10, MAX_RETRY)
    await settle(storage, settled.id)
    return settled, other, await raw_by_id(harness)


async def test_fetch_pending_empty_expect_empty_list(outbox_harness: AbstractOutboxHarness) -> None:
    """An empty outbox yields an empty claim."""
    claimed = await outbox_harness.new_storage().fetch_pending(10, MAX_RETRY)
    assert claimed == [], rule("an empty outbox yields an empty claim", names(claimed))


async def test_fetch_pending_expect_oldest_first(outbox_harness: AbstractOutboxHarness) -> None:
    """Keyless messages come out in the order they were committed."""
    sent = [message() for _ in range(30)]
    for start in range(0, 30, 5):
        await outbox_harness.write(sent[start : start + 5], business_key=f"b{start}")
    storage = outbox_harness.new_storage()
    claimed = await storage.fetch_pending(12, MAX_RETRY)
    claimed += await storage.fetch_pending(100, MAX_RETRY)
    assert ids(claimed) == ids(sent), rule(
        "keyless messages are claimed oldest first, in commit order",
        f"committed {names(sent)}, claimed {names(claimed)}",
    )


async def test_fetch_pending_limit_expect_at_most_limit(outbox_harness: AbstractOutboxHarness) -> None:
    """A claim never returns more than ``limit`` messages."""
    await outbox_harness.write([message() for _ in range(7)])
    storage = outbox_harness.new_storage()
    sizes = [len(await storage.fetch_pending(3, MAX_RETRY)) for _ in range(3)]
    assert sizes == [3, 3, 1], rule(
        "a claim returns at most `limit` messages and never the same one twice",
        f"claims of limit 3 over 7 messages returned {sizes}",
    )


async def test_fetch_pending_claimed_expect_other_instance_gets_nothing(outbox_harness: AbstractOutboxHarness) -> None:
    """A live claim hides the message from every other instance."""
    await outbox_harness.write([message(), message()])
    first, second = outbox_harness.new_storage(), outbox_harness.new_storage()
    mine = await first.fetch_pending(10, MAX_RETRY)
    assert len(mine) == 2, rule("a claim takes every pending message up to the limit", names(mine))
    theirs = await second.fetch_pending(10, MAX_RETRY)
    assert theirs == [], rule("a live claim hides the message from other instances", names(theirs))
    stored = await outbox_harness.raw_records()
    assert all(r.claimed for r in stored), rule(
        "a claim is recorded in the store", [(r.event_name, r.claimed) for r in stored]
    )


async def test_fetch_pending_concurrent_instances_expect_disjoint_claims(outbox_harness: AbstractOutboxHarness) -> None:
    """Instances claiming at the same time never get the same message while its claim holds.

    On a slow machine a claim may really lapse between rounds (its lease or
    timeout ran out) and be taken again; that is the storage working. A
    message counts as claimed twice only when the second claim ended before
    the first one's hold could have run out, measured from before the first
    round began, so a correct storage is never called broken.
    """
    hold = outbox_harness.claim_lease_seconds or outbox_harness.claim_timeout_seconds
    sent = [message() for _ in range(80)]
    await outbox_harness.write(sent)
    storages = [outbox_harness.new_storage() for _ in range(4)]
    claimed: list[OutboxMessage] = []
    first_claim: dict[str, float] = {}
    twice: set[str] = set()
    lapsed: set[str] = set()
    for _ in range(4):
        started = time.monotonic()
        results = await asyncio.gather(*(s.fetch_pending(7, MAX_RETRY) for s in storages))
        ended = time.monotonic()
        for m in (m for batch in results for m in batch):
            name = names([m])[0]
            if name not in first_claim:
                first_claim[name] = started
            elif ended - first_claim[name] < hold:
                twice.add(name)
            else:
                lapsed.add(name)
            claimed.append(m)
    assert not twice, rule(
        "concurrent claims never hand one message to two instances", f"claimed twice: {sorted(twice)}"
    )
    rest = await storages[0].fetch_pending(100, MAX_RETRY)
    seen = ids(claimed) + ids(rest)
    if lapsed or time.monotonic() - min(first_claim.values(), default=time.monotonic()) >= hold:
        # Some claims may have lapsed and been taken again (by `rest` too): every
        # message is still claimed and nothing unknown is, but not once each.
        assert set(map(str, seen)) == set(map(str, ids(sent))), rule(
            "every message is claimed across instances",
            f"{len(set(map(str, seen)))} distinct of {len(sent)} (slow run: {len(lapsed)} claims lapsed)",
        )
        return
    assert sorted(map(str, seen)) == sorted(map(str, ids(sent))), rule(
        "every message is claimed exactly once across instances",
        f"{len(claimed)} + {len(rest)} claimed of {len(sent)}",
    )


async def test_fetch_pending_claim_expired_expect_takeover(outbox_harness: AbstractOutboxHarness) -> None:
    """After the claim ends (timeout, or lapsed lease) another instance takes the message over."""
    sent = message()
    await outbox_harness.write([sent])
    first, second = outbox_harness.new_storage(), outbox_harness.new_storage()
    assert ids(await first.fetch_pending(10, MAX_RETRY)) == [sent.id], rule("a pending message can be claimed", "nothing")
    taken = await claim_after_expiry(outbox_harness, second, what="another instance to take over an expired claim")
    assert ids(taken) == [sent.id], rule("an expired claim is taken over", names(taken))


async def test_mark_published_expect_never_fetched_again(outbox_harness: AbstractOutboxHarness) -> None:
    """A published message is never handed out again, also after the claim timeout."""
    done, other, raw = await _settle_first_of_two(
        outbox_harness, "done", lambda storage, message_id: storage.mark_published(message_id)
    )
    assert raw[done.id].published and not raw[other.id].published, rule(
        "mark_published publishes that message only",
        {"done": raw[done.id].published, "other": raw[other.id].published},
    )
    again = await claim_after_expiry(outbox_harness, outbox_harness.new_storage())
    assert ids(again) == [other.id], rule("a published message is never claimed again", names(again))


async def test_mark_published_by_expired_owner_expect_new_owner_state_kept(outbox_harness: AbstractOutboxHarness) -> None:
    """An acknowledgement from an instance whose claim was taken over changes nothing."""
    sent = message()
    await outbox_harness.write([sent])
    stale, fresh = outbox_harness.new_storage(), outbox_harness.new_storage()
    await stale.fetch_pending(10, MAX_RETRY)
    assert ids(await claim_after_expiry(outbox_harness, fresh)) == [sent.id], rule(
        "an expired claim is taken over", "not taken over"
    )
    await stale.mark_published(sent.id)
    await stale.increment_retry(sent.id)
    raw = (await raw_by_id(outbox_harness))[sent.id]
    state = (raw.published, raw.retry_count, raw.claimed)
    assert state == (False, 0, True), rule(
        "an instance whose claim was taken over cannot publish or spend retries (fencing)",
        f"published, retry_count, claimed = {state}",
    )
    await fresh.mark_published(sent.id)
    assert (await raw_by_id(outbox_harness))[sent.id].published, rule(
        "the new owner can publish", "not published"
    )


async def test_increment_retry_expect_count_raised(outbox_harness: AbstractOutboxHarness) -> None:
    """``increment_retry`` raises the stored retry count by one."""
    sent = message()
    await outbox_harness.write([sent])
    storage = outbox_harness.new_storage()
    await storage.fetch_pending(1, MAX_RETRY)
    await storage.increment_retry(sent.id)
    count = (await raw_by_id(outbox_harness))[sent.id].retry_count
    assert count == 1, rule("increment_retry raises the stored retry count by one", count)
    again = await claim_after_expiry(outbox_harness, storage)
    got = [(m.id, m.retry_count) for m in again]
    assert got == [(sent.id, 1)], rule("a claimed message carries its retry count", got)


async def test_fetch_pending_budget_spent_expect_never_returned(outbox_harness: AbstractOutboxHarness) -> None:
    """A message whose retry count reached ``max_retry`` is never handed out, also after its claim ends."""
    spent, control = message(name="spent"), message(name="control")
    await spend_budget(outbox_harness, spent, control)
    taker = outbox_harness.new_storage()
    back = await claim_after_expiry(
        outbox_harness, taker, what="the control message's claim to end (so the spent one's ends too)"
    )
    assert spent.id not in ids(back), rule(
        f"fetch_pending never returns a message whose retry_count reached max_retry ({MAX_RETRY})",
        f"claimed after expiry: {names(back)}",
    )
    later = await taker.fetch_pending(10, MAX_RETRY)
    assert later == [], rule("a spent message is not claimable", names(later))


async def test_mark_abandoned_expect_readable_and_never_fetched(outbox_harness: AbstractOutboxHarness) -> None:
    """An abandoned message stays stored but is never handed out again, also after the claim timeout."""
    sent, other, raw = await _settle_first_of_two(
        outbox_harness, "abandoned", lambda storage, message_id: storage.mark_abandoned(message_id)
    )
    assert sent.id in raw and raw[sent.id].abandoned and not raw[sent.id].published, rule(
        "an abandoned message stays stored, marked abandoned, not published",
        None if sent.id not in raw else (raw[sent.id].abandoned, raw[sent.id].published),
    )
    again = await claim_after_expiry(outbox_harness, outbox_harness.new_storage())
    assert ids(again) == [other.id], rule("an abandoned message is never claimed again", names(again))
