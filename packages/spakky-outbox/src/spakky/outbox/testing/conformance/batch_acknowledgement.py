"""Rules of ``Capability.BATCH_ACKNOWLEDGEMENT``: one call publishes many, fenced like one."""


from spakky.outbox.ports.storage import (
    IAsyncOutboxBatchAcknowledgement,
)

from .support import *  # the rule-writing kit (support.__all__)


@capability(Capability.BATCH_ACKNOWLEDGEMENT)
async def test_mark_published_many_expect_all_published(outbox_harness: AbstractOutboxHarness) -> None:
    """One batch acknowledgement publishes every listed message."""
    sent = [message() for _ in range(25)]
    await outbox_harness.write(sent)
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxBatchAcknowledgement)
    await storage.fetch_pending(100, MAX_RETRY)
    settled = await storage.mark_published_many(ids(sent[:20]))
    raw = await raw_by_id(outbox_harness)
    published = [raw[m.id].published for m in sent]
    assert published == [True] * 20 + [False] * 5, rule(
        "mark_published_many publishes exactly the listed messages",
        f"published flags {published}",
    )
    assert settled == 20, rule("mark_published_many returns how many messages it published", settled)


@capability(Capability.BATCH_ACKNOWLEDGEMENT)
async def test_mark_published_many_after_takeover_expect_fenced(outbox_harness: AbstractOutboxHarness) -> None:
    """A batch acknowledgement only applies to messages the instance still holds."""
    sent = [message() for _ in range(3)]
    await outbox_harness.write(sent)
    stale, fresh = outbox_harness.new_storage(), outbox_harness.new_storage()
    assert isinstance(stale, IAsyncOutboxBatchAcknowledgement)
    await stale.fetch_pending(10, MAX_RETRY)
    taken = await claim_after_expiry(outbox_harness, fresh)
    assert len(taken) == 3, rule("expired claims are taken over", names(taken))
    settled = await stale.mark_published_many(ids(sent))
    stored = await outbox_harness.raw_records()
    assert not any(r.published for r in stored), rule(
        "a batch acknowledgement from an instance whose claims were taken over changes nothing",
        [r.event_name for r in stored if r.published],
    )
    assert settled == 0, rule(
        "a fenced-off batch acknowledgement says it settled nothing (the relay counts and logs it)", settled
    )
