"""Rules of the transactional save (base level): commit, rollback, fields kept verbatim."""


from spakky.outbox.error import AbstractSpakkyOutboxError

from .support import *  # the rule-writing kit (support.__all__)


async def test_save_commit_expect_message_and_business_record_visible(outbox_harness: AbstractOutboxHarness) -> None:
    """A committed transaction makes the business record and the message visible."""
    sent = message()
    await outbox_harness.write([sent], business_key="order-1")
    assert await outbox_harness.business_record_exists("order-1"), rule(
        "a committed transaction keeps its business record", "business record missing"
    )
    stored = await outbox_harness.raw_records()
    assert [r.id for r in stored] == [sent.id], rule(
        "a committed transaction stores its message exactly once", names(stored)
    )


async def test_save_rollback_expect_neither_business_record_nor_message(outbox_harness: AbstractOutboxHarness) -> None:
    """A rolled-back transaction leaves neither the business record nor the message."""
    await outbox_harness.write([message(), message("k")], commit=False, business_key="order-2")
    assert not await outbox_harness.business_record_exists("order-2"), rule(
        "a rollback discards the business record", "business record committed"
    )
    stored = await outbox_harness.raw_records()
    assert stored == [], rule("a rollback discards the messages saved in it", names(stored))


async def test_save_fields_expect_stored_verbatim(outbox_harness: AbstractOutboxHarness) -> None:
    """Every field is stored as given, binary payload and headers included."""
    sent = message(
        "customer-7",
        name="Order.Placed",
        payload=bytes(range(256)),
        headers={"traceparent": "00-1-2-01", "spakky.auth.context_snapshot": "sig.body"},
    )
    await outbox_harness.write([sent])
    raw = (await raw_by_id(outbox_harness))[sent.id]
    stored = (raw.event_name, raw.payload, raw.headers, raw.partition_key)
    assert stored == (sent.event_name, sent.payload, sent.headers, sent.partition_key), rule(
        "event name, payload bytes, headers and partition key are stored verbatim", stored
    )
    state = (raw.retry_count, raw.claimed, raw.published, raw.abandoned)
    assert state == (0, False, False, False), rule(
        "a new message is unclaimed, unpublished, not abandoned, with no retry spent",
        f"retry_count, claimed, published, abandoned = {state}",
    )
    fetched = await outbox_harness.new_storage().fetch_pending(10, MAX_RETRY)
    got = [(m.id, m.event_name, m.payload, m.headers, m.partition_key) for m in fetched]
    assert got == [(sent.id, sent.event_name, sent.payload, sent.headers, sent.partition_key)], rule(
        "a claimed message carries every field as saved", got
    )


async def test_save_created_at_expect_stored_and_returned(outbox_harness: AbstractOutboxHarness) -> None:
    """``created_at`` is stored, timezone-aware, and handed back with the claim (to the millisecond)."""
    sent = message()
    await outbox_harness.write([sent])
    raw = (await raw_by_id(outbox_harness))[sent.id]
    assert raw.created_at.tzinfo is not None, rule("created_at is stored timezone-aware", raw.created_at)
    drift = abs((raw.created_at - sent.created_at).total_seconds())
    assert drift < 0.001, rule(
        "created_at is stored as given", f"saved {sent.created_at.isoformat()}, stored {raw.created_at.isoformat()}"
    )
    fetched = await outbox_harness.new_storage().fetch_pending(1, MAX_RETRY)
    assert len(fetched) == 1, rule("a pending message can be claimed", names(fetched))
    returned = fetched[0].created_at
    assert returned.tzinfo is not None and abs((returned - sent.created_at).total_seconds()) < 0.001, rule(
        "a claimed message carries created_at as saved, timezone-aware",
        f"saved {sent.created_at.isoformat()}, returned {returned.isoformat()}",
    )


async def test_save_outside_transaction_expect_clear_error_or_documented_write(outbox_harness: AbstractOutboxHarness) -> None:
    """Outside a transaction ``save`` refuses with our error, or writes on its own."""
    sent = message()
    try:
        wrote = await outbox_harness.save_outside_transaction(sent)
    except AbstractSpakkyOutboxError as error:
        assert str(error), rule("a refused save outside a transaction says why", repr(error))
        stored = await outbox_harness.raw_records()
        assert stored == [], rule("a refused save stores nothing", names(stored))
        return
    assert wrote, rule("save outside a transaction refuses or writes", "neither")
    stored = await outbox_harness.raw_records()
    assert [r.id for r in stored] == [sent.id], rule(
        "a documented standalone save stores the message", names(stored)
    )


async def test_save_large_payload_expect_intact(outbox_harness: AbstractOutboxHarness) -> None:
    """A payload of several megabytes round-trips byte for byte."""
    payload = (b"0123456789abcdef" * 65536 * 3)[:3_000_001]
    sent = message(payload=payload)
    await outbox_harness.write([sent])
    fetched = await outbox_harness.new_storage().fetch_pending(1, MAX_RETRY)
    assert len(fetched) == 1 and fetched[0].payload == payload, rule(
        "a 3 MB payload round-trips byte for byte",
        [len(m.payload) for m in fetched],
    )


async def test_save_many_transactions_expect_nothing_lost(outbox_harness: AbstractOutboxHarness) -> None:
    """Messages from many transactions are all stored exactly once."""
    sent = [message(f"k{i % 3}" if i % 2 else None) for i in range(60)]
    for start in range(0, len(sent), 6):
        await outbox_harness.write(sent[start : start + 6], business_key=f"b{start}")
    stored = await outbox_harness.raw_records()
    missing = sorted(set(names(sent)) - set(names(stored)))
    assert sorted(map(str, (r.id for r in stored))) == sorted(map(str, ids(sent))), rule(
        "every committed message is stored exactly once",
        f"{len(stored)} stored of {len(sent)}; missing {missing}",
    )
