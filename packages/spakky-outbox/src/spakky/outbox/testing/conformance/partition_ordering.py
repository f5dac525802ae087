"""Rules of ``Capability.PARTITION_ORDERING``: a key's messages go out in commit order, one holder per key."""

import asyncio

from .support import *  # the rule-writing kit (support.__all__)


@capability(Capability.PARTITION_ORDERING)
async def test_fetch_pending_keyed_batch_expect_key_order(outbox_harness: AbstractOutboxHarness) -> None:
    """Messages of one key come out in commit order, interleaved keys included."""
    sent = [message(f"k{i % 3}") for i in range(30)]
    for start in range(0, 30, 3):
        await outbox_harness.write(sent[start : start + 3], business_key=f"b{start}")
    storage = outbox_harness.new_storage()
    claimed = await storage.fetch_pending(100, MAX_RETRY)
    for key in ("k0", "k1", "k2"):
        mine = [m for m in claimed if m.partition_key == key]
        expected = [m for m in sent if m.partition_key == key]
        assert mine and ids(mine) == ids(expected[: len(mine)]), rule(
            f"a claim takes a key's messages from its oldest on, in commit order (key {key})",
            f"committed {names(expected)}, claimed {names(mine)}",
        )


@capability(Capability.PARTITION_ORDERING)
async def test_fetch_pending_key_head_claimed_elsewhere_expect_key_withheld(outbox_harness: AbstractOutboxHarness) -> None:
    """While one instance holds a key's oldest message, no other gets that key."""
    head, follower, other = message("a", name="head"), message("a", name="follower"), message("b", name="other")
    await outbox_harness.write([head, follower, other])
    first, second = outbox_harness.new_storage(), outbox_harness.new_storage()
    assert ids(await first.fetch_pending(1, MAX_RETRY)) == [head.id], rule("a key's oldest message comes first", "not head")
    theirs = await second.fetch_pending(10, MAX_RETRY)
    assert ids(theirs) == [other.id], rule(
        "while one instance holds a key's oldest message, no other gets that key", names(theirs)
    )
    await first.mark_published(head.id)
    after = await second.fetch_pending(10, MAX_RETRY)
    assert ids(after) == [follower.id], rule("once the head is published the key goes on", names(after))


@capability(Capability.PARTITION_ORDERING)
async def test_fetch_pending_key_head_retried_expect_head_first_again(outbox_harness: AbstractOutboxHarness) -> None:
    """After a retry the key's oldest message still comes out first."""
    head, follower = message("a", name="head"), message("a", name="follower")
    await outbox_harness.write([head, follower])
    storage = outbox_harness.new_storage()
    assert ids(await storage.fetch_pending(1, MAX_RETRY)) == [head.id], rule("a key's oldest message comes first", "not head")
    await storage.increment_retry(head.id)
    early = await outbox_harness.new_storage().fetch_pending(10, MAX_RETRY)
    assert early == [], rule("a key's later messages wait while its head is claimed", names(early))
    again = await claim_after_expiry(outbox_harness, outbox_harness.new_storage())
    assert ids(again) in ([head.id], [head.id, follower.id]), rule(
        "after a retry the key's oldest message comes first again", names(again)
    )


@capability(Capability.PARTITION_ORDERING)
async def test_fetch_pending_spent_key_head_expect_followers_held(outbox_harness: AbstractOutboxHarness) -> None:
    """A key whose oldest message spent its budget but is not abandoned lets nothing of it overtake."""
    head, control = message("a", name="head"), message(name="control")
    await spend_budget(outbox_harness, head, control)
    follower = message("a", name="follower")
    await outbox_harness.write([follower])
    taker = outbox_harness.new_storage()
    back = await claim_after_expiry(outbox_harness, taker, what="the control message's claim to end")
    later = back + await taker.fetch_pending(10, MAX_RETRY)
    assert follower.id not in ids(later) and head.id not in ids(later), rule(
        "a key's later messages never overtake its oldest undelivered message, even one whose "
        "budget is spent (only abandoning it releases the key)",
        f"claimed after the head's claim ended: {names(later)}",
    )


@capability(Capability.PARTITION_ORDERING)
async def test_fetch_pending_key_head_abandoned_expect_key_released(outbox_harness: AbstractOutboxHarness) -> None:
    """Abandoning a key's oldest message lets the rest of the key through."""
    head, follower = message("a", name="head"), message("a", name="follower")
    await outbox_harness.write([head, follower])
    storage = outbox_harness.new_storage()
    await storage.fetch_pending(1, MAX_RETRY)
    await storage.mark_abandoned(head.id)
    after = await outbox_harness.new_storage().fetch_pending(10, MAX_RETRY)
    assert ids(after) == [follower.id], rule("abandoning a key's head releases the key", names(after))


@capability(Capability.PARTITION_ORDERING)
async def test_fetch_pending_hot_key_blocked_expect_other_keys_served(outbox_harness: AbstractOutboxHarness) -> None:
    """A big key whose head is held elsewhere does not starve other keys or keyless messages."""
    hot = [message("hot") for _ in range(300)]
    await outbox_harness.write(hot, business_key="hot")
    others = [message(f"k{i}") for i in range(5)] + [message() for _ in range(5)]
    await outbox_harness.write(others, business_key="others")
    holder, worker = outbox_harness.new_storage(), outbox_harness.new_storage()
    assert ids(await holder.fetch_pending(1, MAX_RETRY)) == [hot[0].id], rule("a key's oldest message comes first", "not hot[0]")
    claimed = await worker.fetch_pending(10, MAX_RETRY)
    assert sorted(map(str, ids(claimed))) == sorted(map(str, ids(others))), rule(
        "a held key does not starve other keys or keyless messages",
        f"expected {sorted(names(others))}, claimed {sorted(names(claimed))}",
    )


@capability(Capability.PARTITION_ORDERING)
async def test_fetch_pending_many_single_message_keys_expect_full_batch(outbox_harness: AbstractOutboxHarness) -> None:
    """Many keys with one message each still fill a batch in one claim."""
    sent = [message(f"k{i}") for i in range(30)]
    await outbox_harness.write(sent)
    claimed = await outbox_harness.new_storage().fetch_pending(20, MAX_RETRY)
    assert len(claimed) == 20, rule(
        "a claim takes up to `limit` messages across keys with one message each",
        f"{len(claimed)} claimed of 30 keys with limit 20",
    )


@capability(Capability.PARTITION_ORDERING)
async def test_fetch_pending_concurrent_keyed_expect_one_holder_per_key(outbox_harness: AbstractOutboxHarness) -> None:
    """Instances claiming concurrently never hold messages of the same key at once."""
    await outbox_harness.write([message(f"k{i % 5}") for i in range(50)])
    storages = [outbox_harness.new_storage() for _ in range(4)]
    results = await asyncio.gather(*(s.fetch_pending(6, MAX_RETRY) for s in storages))
    holders: dict[str, int] = {}
    for index, batch in enumerate(results):
        for claimed in batch:
            assert claimed.partition_key is not None, rule("keyed messages keep their key", claimed.event_name)
            holder = holders.setdefault(claimed.partition_key, index)
            assert holder == index, rule(
                "one key is held by one instance at a time",
                f"key {claimed.partition_key} held by instances {holder} and {index}",
            )


@capability(Capability.PARTITION_ORDERING)
async def test_relay_refusal_spending_budget_expect_abandoned_and_key_goes_on_in_same_batch(outbox_harness: AbstractOutboxHarness) -> None:
    """A refusal that spends the last retry abandons at once; the key's next message goes out in that batch (as 8.5).

    Both refusal paths: at ``send`` (key ``s``) and at ``flush`` (key ``f``).
    """
    heads = [message("s", name="head-s"), message("f", name="head-f")]
    followers = [message("s", name="next-s"), message("f", name="next-f")]
    await outbox_harness.write([heads[0], followers[0], heads[1], followers[1]])
    transport = AsyncRecordingEventTransport()
    transport.faults.refuse = lambda r: r.event_name == "head-s"
    transport.faults.refuse_at_flush = lambda r: r.event_name == "head-f"
    relay = relay_over(outbox_harness, outbox_harness.new_storage(), transport, max_retry_count=1)
    await relay.relay_batch()
    delivered = sorted(d.event_name for d in transport.delivered)
    raw = await raw_by_id(outbox_harness)
    given_up = [raw[m.id].abandoned or raw[m.id].retry_count >= 1 for m in heads]
    published = [raw[m.id].published for m in followers]
    assert (delivered, given_up, published) == (["next-f", "next-s"], [True, True], [True, True]), rule(
        "refused (at send, at flush) with its budget spent, a message is abandoned before its key goes on, "
        "in the same batch",
        f"delivered={delivered}, heads abandoned={given_up}, followers published={published}",
    )
