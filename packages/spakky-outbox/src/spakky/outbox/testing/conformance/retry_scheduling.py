"""Rules of ``Capability.RETRY_SCHEDULING``: scheduled retries, release, abandon with a reason."""

import time

import pytest
from spakky.outbox.common.reasons import MAX_REASON_BYTES, storable_reason
from spakky.outbox.ports.storage import (
    IAsyncOutboxRetryScheduling,
)

from .support import *  # the rule-writing kit (support.__all__)


@capability(Capability.RETRY_SCHEDULING)
async def test_fetch_pending_undecodable_expect_abandoned_with_reason(outbox_harness: AbstractOutboxHarness) -> None:
    """A stored message the storage cannot decode is abandoned with the reason; the rest is claimed."""
    before, damaged, after = message(name="before"), message(name="damaged"), message(name="after")
    await outbox_harness.write([before, damaged, after])
    try:
        await outbox_harness.corrupt(damaged.id)
    except NotImplementedError:
        pytest.skip("the harness offers no corrupt() backdoor")
    claimed = await outbox_harness.new_storage().fetch_pending(10, MAX_RETRY)
    assert ids(claimed) == [before.id, after.id], rule(
        "an undecodable message is not returned, and does not stop the rest of the claim",
        names(claimed),
    )
    raw = (await raw_by_id(outbox_harness))[damaged.id]
    assert raw.abandoned and raw.last_error and "undecodable" in raw.last_error, rule(
        "an undecodable message is abandoned with the decoding error as its reason",
        f"abandoned={raw.abandoned}, last_error={raw.last_error!r}",
    )


@capability(Capability.RETRY_SCHEDULING)
async def test_schedule_retry_expect_back_after_delay_with_error(outbox_harness: AbstractOutboxHarness) -> None:
    """A scheduled retry spends budget, keeps the error and returns after the delay."""
    sent = message()
    await outbox_harness.write([sent])
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxRetryScheduling)
    await storage.fetch_pending(1, MAX_RETRY)
    delay = outbox_harness.claim_timeout_seconds / 2
    await storage.schedule_retry(sent.id, delay, "EventDeliveryRejectedError: no route")
    raw = (await raw_by_id(outbox_harness))[sent.id]
    assert (raw.retry_count, raw.last_error) == (1, "EventDeliveryRejectedError: no route"), rule(
        "schedule_retry spends one retry and keeps the error", (raw.retry_count, raw.last_error)
    )
    early = await outbox_harness.new_storage().fetch_pending(1, MAX_RETRY)
    assert early == [], rule("a scheduled retry is not claimable before its delay", names(early))
    back, _ = await eventually(
        outbox_harness,
        lambda: outbox_harness.new_storage().fetch_pending(1, MAX_RETRY),
        bool,
        timeout=delay * 8,
        what=f"a retry scheduled {delay}s ahead to be claimable",
    )
    got = [(m.id, m.retry_count) for m in back]
    assert got == [(sent.id, 1)], rule("a retried message comes back with its retry count", got)


@capability(Capability.RETRY_SCHEDULING)
async def test_schedule_retry_keyed_expect_key_waits(outbox_harness: AbstractOutboxHarness) -> None:
    """While a key's head waits for its retry, nothing later of that key is handed out."""
    head, follower, other = message("a", name="head"), message("a", name="follower"), message(name="other")
    await outbox_harness.write([head, follower, other])
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxRetryScheduling)
    await storage.fetch_pending(10, MAX_RETRY)
    await storage.schedule_retry(head.id, 30.0, "refused")
    await storage.release([follower.id])
    claimed = await outbox_harness.new_storage().fetch_pending(10, MAX_RETRY)
    assert follower.id not in ids(claimed), rule(
        "while a key's head waits for its retry, the key's later messages wait too", names(claimed)
    )


@capability(Capability.RETRY_SCHEDULING)
async def test_release_expect_claimable_at_once_without_budget_spent(outbox_harness: AbstractOutboxHarness) -> None:
    """Released claims are claimable immediately and keep their retry count."""
    sent = [message("a"), message("a"), message()]
    await outbox_harness.write(sent)
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxRetryScheduling)
    await storage.fetch_pending(10, MAX_RETRY)
    await storage.release(ids(sent))
    stored = await outbox_harness.raw_records()
    assert all(not r.claimed and r.retry_count == 0 for r in stored), rule(
        "release drops the claims without spending retries",
        [(r.event_name, r.claimed, r.retry_count) for r in stored],
    )
    again = await outbox_harness.new_storage().fetch_pending(10, MAX_RETRY)
    assert ids(again) in (ids(sent), [sent[0].id, sent[2].id]), rule(
        "released messages are claimable at once, in order", names(again)
    )


@capability(Capability.RETRY_SCHEDULING)
async def test_abandon_expect_reason_kept(outbox_harness: AbstractOutboxHarness) -> None:
    """Abandoning keeps the message readable with its reason."""
    sent = message("a")
    await outbox_harness.write([sent])
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxRetryScheduling)
    await storage.fetch_pending(1, MAX_RETRY)
    await storage.abandon(sent.id, "poison: schema mismatch")
    raw = (await raw_by_id(outbox_harness))[sent.id]
    assert (raw.abandoned, raw.last_error) == (True, "poison: schema mismatch"), rule(
        "abandon keeps the message with its reason", (raw.abandoned, raw.last_error)
    )


@capability(Capability.RETRY_SCHEDULING)
async def test_release_by_other_instance_expect_claim_kept(outbox_harness: AbstractOutboxHarness) -> None:
    """An instance cannot release a claim it does not hold."""
    sent = message()
    await outbox_harness.write([sent])
    owner, intruder = outbox_harness.new_storage(), outbox_harness.new_storage()
    assert isinstance(intruder, IAsyncOutboxRetryScheduling)
    await owner.fetch_pending(1, MAX_RETRY)
    await intruder.release([sent.id])
    await intruder.schedule_retry(sent.id, 0.0, "not mine")
    raw = (await raw_by_id(outbox_harness))[sent.id]
    state = (raw.claimed, raw.retry_count, raw.last_error)
    assert state == (True, 0, None), rule(
        "release and schedule_retry only touch claims the instance holds (fencing)",
        f"claimed, retry_count, last_error = {state}",
    )


@capability(Capability.RETRY_SCHEDULING)
async def test_abandon_longest_reason_expect_stored_verbatim(outbox_harness: AbstractOutboxHarness) -> None:
    """The longest reason the relay writes (4 KB of 4-byte characters, tabs, controls) is kept as given."""
    unit = "\U0001f4e6\t\x01\x7f\n\u00e9"
    reason = (unit * MAX_REASON_BYTES).encode()[:MAX_REASON_BYTES].decode("utf-8", "ignore")
    assert storable_reason(reason) == reason, "the suite's own reason must be one the relay writes"
    retried, abandoned = message(name="retried"), message(name="abandoned")
    await outbox_harness.write([retried, abandoned])
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxRetryScheduling)
    await storage.fetch_pending(10, MAX_RETRY)
    await storage.schedule_retry(retried.id, 30.0, reason)
    await storage.abandon(abandoned.id, reason)
    raw = await raw_by_id(outbox_harness)
    kept = [raw[retried.id].last_error == reason, raw[abandoned.id].last_error == reason]
    assert kept == [True, True], rule(
        f"a reason of {MAX_REASON_BYTES} UTF-8 bytes (what the relay writes at most) is stored verbatim",
        f"kept by schedule_retry, abandon: {kept}",
    )


UNSTORABLE = "payload name \udcff, a NUL \x00 and a body: " + "x" * 70_000
"""A broker's refusal text no backend stores as it is: a lone surrogate (no UTF-8
encoder takes it), a NUL byte (PostgreSQL text), 70 KB (more than a MariaDB TEXT)."""


@capability(Capability.RETRY_SCHEDULING)
async def test_relay_unstorable_refusal_reason_expect_stored_cleaned_and_key_moves_on(outbox_harness: AbstractOutboxHarness) -> None:
    """A refusal text no backend can store as it is still lands: budget spent, reason kept, key released."""
    head, follower = message("k", name="head"), message("k", name="follower")
    await outbox_harness.write([head, follower])
    transport = AsyncRecordingEventTransport()
    transport.faults.refuse = lambda r: r.event_name == "head"
    transport.faults.refusal_reason = lambda r: UNSTORABLE
    relay = relay_over(outbox_harness, outbox_harness.new_storage(), transport, max_retry_count=2)
    started = time.monotonic()
    await relay.relay_batch()
    raw = (await raw_by_id(outbox_harness))[head.id]
    stored = raw.last_error or ""
    assert (raw.retry_count, raw.claimed) == (1, False), rule(
        "a refusal whose text cannot be stored as it is still spends the budget and releases the claim",
        f"retry_count={raw.retry_count}, claimed={raw.claimed}, last_error={stored[:80]!r}",
    )
    assert "\\udcff" in stored and "\\x00" in stored and len(stored.encode()) <= MAX_REASON_BYTES, rule(
        f"the stored reason is cleaned (escapes) and bounded to {MAX_REASON_BYTES} bytes",
        f"{len(stored.encode())} bytes: {stored[:80]!r}",
    )
    async def relay_once() -> list[str]:
        await relay.relay_batch()
        return [d.event_name for d in transport.delivered]

    await eventually(
        outbox_harness,
        relay_once,
        lambda got: got == ["follower"],
        timeout=claim_ends_within(outbox_harness) * 4,
        what="the head to be abandoned and its follower delivered",
    )
    raw = (await raw_by_id(outbox_harness))[head.id]
    assert raw.abandoned and (raw.last_error or "").startswith("EventDeliveryRejectedError: payload name"), rule(
        "the head is abandoned with its cleaned reason", (raw.abandoned, (raw.last_error or "")[:80])
    )
    assert time.monotonic() - started < outbox_harness.claim_timeout_seconds * 4, rule(
        "no write is retried until the claim times out", f"{time.monotonic() - started:.1f} s"
    )


@capability(Capability.RETRY_SCHEDULING)
async def test_relay_lowered_max_retry_expect_spent_messages_abandoned_visible_and_lanes_move(outbox_harness: AbstractOutboxHarness) -> None:
    """Messages refused more often than a lowered MAX_RETRY_COUNT allows are abandoned with a reason, never stranded."""
    batch = 5
    spent = [message(name=f"spent{i}") for i in range(4 * batch + 1)]
    keyed_spent, keyed_next = message("k", name="keyed-spent"), message("k", name="keyed-next")
    fresh = [message(name=f"fresh{i}") for i in range(3)]
    await outbox_harness.write([*spent, keyed_spent, keyed_next])
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxRetryScheduling)
    refused = {m.id for m in [*spent, keyed_spent]}
    for _ in range(3):  # three refusals under MAX_RETRY_COUNT=5
        claimed = await storage.fetch_pending(100, MAX_RETRY)
        for claimed_message in claimed:
            if claimed_message.id in refused:
                await storage.schedule_retry(claimed_message.id, 0.0, "EventDeliveryRejectedError: no route")
        await storage.release([m.id for m in claimed if m.id not in refused])
    await outbox_harness.write(fresh)
    transport = AsyncRecordingEventTransport()
    relay = relay_over(outbox_harness, outbox_harness.new_storage(), transport, max_retry_count=2, batch_size=batch)
    wanted = sorted(["keyed-next", *(m.event_name for m in fresh)])

    async def relay_once() -> list[str]:
        await relay.relay_batch()
        return sorted(d.event_name for d in transport.delivered)

    await eventually(
        outbox_harness, relay_once, lambda got: got == wanted, timeout=claim_ends_within(outbox_harness) * 4,
        what="the messages behind the spent ones to be delivered",
    )
    raw = await raw_by_id(outbox_harness)
    stranded = [raw[m.id].event_name for m in [*spent, keyed_spent] if not raw[m.id].abandoned]
    assert stranded == [], rule(
        "a message whose refusals reach the (lowered) MAX_RETRY_COUNT is abandoned, not left pending",
        f"still pending: {stranded}",
    )
    reason = raw[keyed_spent.id].last_error or ""
    assert "MAX_RETRY_COUNT=2" in reason and "no route" in reason, rule(
        "its reason says why, and keeps the last error", reason
    )
    assert all(d.event_name not in refused for d in transport.delivered)
