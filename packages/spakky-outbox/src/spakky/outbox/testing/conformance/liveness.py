"""Rules of ``Capability.LIVENESS``: claims live by renewal, lapse after their lease, never past the claim timeout."""

import asyncio
import time
from collections.abc import Sequence
from uuid import UUID

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.outbox.ports.storage import (
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxLiveness,
    IAsyncOutboxStorage,
)

from .support import *  # the rule-writing kit (support.__all__)


def _liveness(storage: IAsyncOutboxStorage) -> IAsyncOutboxLiveness:
    assert isinstance(storage, IAsyncOutboxLiveness), rule(
        "a storage declaring liveness implements IAsyncOutboxLiveness", type(storage).__name__
    )
    return storage


def _lease(harness: AbstractOutboxHarness) -> float:
    lease = harness.claim_lease_seconds
    assert lease is not None and lease < harness.claim_timeout_seconds, rule(
        "a harness declaring liveness sets claim_lease_seconds shorter than claim_timeout_seconds",
        f"lease {lease}, timeout {harness.claim_timeout_seconds}",
    )
    return lease


async def _held(harness: AbstractOutboxHarness, name: str) -> tuple[OutboxMessage, IAsyncOutboxStorage, IAsyncOutboxStorage]:
    """A message ``name`` written and claimed by a new storage: the message, its holder, and a second storage."""
    sent = message(name=name)
    await harness.write([sent])
    holder, second = harness.new_storage(), harness.new_storage()
    await holder.fetch_pending(1, MAX_RETRY)
    return sent, holder, second


@capability(Capability.LIVENESS)
async def test_renew_claims_expect_claim_kept_past_lease(outbox_harness: AbstractOutboxHarness) -> None:
    """A claim renewed in time outlives its lease: no other instance gets the message."""
    lease = _lease(outbox_harness)
    sent, owner, other = await _held(outbox_harness, "renewed")
    step, waited = lease / 10, 0.0
    while waited < lease * 1.6:
        kept = await _liveness(owner).renew_claims([sent.id])
        assert kept == 1, rule("renew_claims reports the claims still held", f"{kept} of 1 after {waited:.1f}s")
        stolen = await other.fetch_pending(10, MAX_RETRY)
        assert stolen == [], rule(
            "a claim renewed within its lease is not taken over",
            f"taken over after {waited:.1f}s with a {lease}s lease: {names(stolen)}",
        )
        await outbox_harness.advance(step)
        waited += step


@capability(Capability.LIVENESS)
async def test_claim_not_renewed_expect_free_after_lease_before_timeout(outbox_harness: AbstractOutboxHarness) -> None:
    """A claim nobody renews frees up after its lease, long before the claim timeout (a dead relay)."""
    lease = _lease(outbox_harness)
    sent, _, taker = await _held(outbox_harness, "orphan")
    taken, waited = await eventually(
        outbox_harness,
        lambda: taker.fetch_pending(1, MAX_RETRY),
        bool,
        timeout=outbox_harness.claim_timeout_seconds * 4,
        what="an unrenewed claim to lapse",
    )
    assert ids(taken) == [sent.id] and waited < outbox_harness.claim_timeout_seconds, rule(
        f"an unrenewed claim frees up after its lease ({lease}s), before the claim timeout "
        f"({outbox_harness.claim_timeout_seconds}s)",
        f"taken over after {waited:.2f}s: {names(taken)}",
    )


@capability(Capability.LIVENESS)
async def test_renew_claims_expect_never_past_claim_timeout(outbox_harness: AbstractOutboxHarness) -> None:
    """Renewals never keep a claim past the claim timeout (a stuck relay loses it)."""
    lease = _lease(outbox_harness)
    sent, owner, taker = await _held(outbox_harness, "stuck")

    async def renew_then_claim() -> list[OutboxMessage]:
        await _liveness(owner).renew_claims([sent.id])
        return await taker.fetch_pending(1, MAX_RETRY)

    taken, _ = await eventually(
        outbox_harness,
        renew_then_claim,
        bool,
        timeout=outbox_harness.claim_timeout_seconds * 3,
        step=lease / 10,
        what="a claim renewed without end to expire at the claim timeout",
    )
    assert ids(taken) == [sent.id], rule("a claim expires at the claim timeout however renewed", names(taken))
    kept = await _liveness(owner).renew_claims([sent.id])
    assert kept == 0, rule("renewing a claim taken over renews nothing", f"renewed {kept}")


@capability(Capability.LIVENESS)
async def test_renew_claims_after_takeover_expect_fenced(outbox_harness: AbstractOutboxHarness) -> None:
    """A relay declared dead that wakes up renews and acknowledges nothing of the new owner's."""
    _lease(outbox_harness)
    sent, sleeper, successor = await _held(outbox_harness, "taken")
    taken = await claim_after_expiry(outbox_harness, successor, what="the sleeper's lease to lapse")
    assert ids(taken) == [sent.id], rule("a lapsed claim is taken over", names(taken))
    kept = await _liveness(sleeper).renew_claims([sent.id])
    await sleeper.mark_published(sent.id)
    raw = (await raw_by_id(outbox_harness))[sent.id]
    assert (kept, raw.published, raw.claimed) == (0, False, True), rule(
        "the old owner can neither renew nor publish over the new owner (fencing)",
        f"renewed {kept}, published {raw.published}, claimed {raw.claimed}",
    )
    intruder = _liveness(outbox_harness.new_storage())
    assert await intruder.renew_claims([sent.id]) == 0, rule(
        "an instance never renews a claim it does not hold", "renewed another instance's claim"
    )


@capability(Capability.LIVENESS)
async def test_relay_stalled_past_lease_between_claim_and_send_expect_nothing_of_batch_sent(outbox_harness: AbstractOutboxHarness) -> None:
    """A relay stalled past its lease after claiming (a GC pause, a frozen VM) sends nothing of that batch."""
    batch = [message("k", name="k1"), message("k", name="k2"), message(name="free")]
    await outbox_harness.write(batch)
    storage = outbox_harness.new_storage()
    claim = storage.fetch_pending
    resume = asyncio.Event()
    claimed_at: list[float] = []

    async def stalling_claim(limit: int, max_retry: int) -> list[OutboxMessage]:
        claimed_at.append(time.monotonic())
        got = await claim(limit, max_retry)
        await resume.wait()  # the stall: nothing of this relay runs, renewals included
        return got

    storage.fetch_pending = stalling_claim  # type: ignore[method-assign]
    transport = AsyncRecordingEventTransport()
    relay = relay_over(outbox_harness, storage, transport)
    stalled = asyncio.ensure_future(relay.relay_batch())
    try:
        await eventually(
            outbox_harness, lambda: asyncio.sleep(0, claimed_at), bool, timeout=5, what="the claim", paced=True
        )
        taker = outbox_harness.new_storage()
        taken: list[OutboxMessage] = []
        while len(taken) < len(batch) or time.monotonic() < claimed_at[0] + claim_ends_within(outbox_harness):
            taken += await taker.fetch_pending(10, MAX_RETRY)
            assert time.monotonic() < claimed_at[0] + claim_ends_within(outbox_harness) * 8, rule(
                "an unrenewed claim lapses after its lease", names(taken)
            )
            await pace(outbox_harness, 0.05)
    finally:
        resume.set()
        await stalled
    assert transport.send_calls == 0 and transport.flush_calls == 0, rule(
        "a relay resuming past its lease starts no send and no flush of the batch it claimed",
        f"{transport.send_calls} sends, {transport.flush_calls} flushes",
    )
    await acknowledge(taker, ids(taken))
    raw = await raw_by_id(outbox_harness)
    assert all(raw[m.id].published for m in batch), rule(
        "the relay that took the batch over settles it", [(r.event_name, r.published) for r in raw.values()]
    )


@capability(Capability.LIVENESS)
async def test_relay_acknowledgement_retried_past_lease_expect_claims_kept(outbox_harness: AbstractOutboxHarness) -> None:
    """While a relay retries an acknowledgement the storage refuses, it keeps renewing: nobody takes the batch."""
    sent = [message("k", name="k1"), message(name="free")]
    await outbox_harness.write(sent)
    storage = outbox_harness.new_storage()
    failing = asyncio.Event()
    failing.set()
    attempts: list[float] = []
    acknowledge = storage.mark_published_many if isinstance(storage, IAsyncOutboxBatchAcknowledgement) else None
    publish = storage.mark_published

    async def refusing_many(message_ids: Sequence[UUID]) -> None:
        attempts.append(time.monotonic())
        if failing.is_set():
            raise OutboxStorageUnavailableError("the acknowledgement did not land")
        assert acknowledge is not None
        await acknowledge(message_ids)

    async def refusing_one(message_id: UUID) -> None:
        attempts.append(time.monotonic())
        if failing.is_set():
            raise OutboxStorageUnavailableError("the acknowledgement did not land")
        await publish(message_id)

    if acknowledge is not None:
        storage.mark_published_many = refusing_many  # type: ignore[method-assign]
    storage.mark_published = refusing_one  # type: ignore[method-assign]
    transport = AsyncRecordingEventTransport()
    relay = relay_over(outbox_harness, storage, transport)
    running = asyncio.ensure_future(relay.relay_batch())
    other = outbox_harness.new_storage()
    stolen: list[OutboxMessage] = []
    try:
        await eventually(
            outbox_harness, lambda: asyncio.sleep(0, attempts), bool, timeout=5, what="an acknowledgement", paced=True
        )
        until = attempts[0] + 2 * claim_ends_within(outbox_harness)
        while time.monotonic() < until:
            stolen += await other.fetch_pending(10, MAX_RETRY)
            await pace(outbox_harness, 0.05)
    finally:
        failing.clear()
        await running
    assert stolen == [], rule(
        "claims stay renewed while their acknowledgement is retried (twice the lease here)", names(stolen)
    )
    raw = await raw_by_id(outbox_harness)
    assert [d.event_name for d in transport.delivered] == ["k1", "free"] and all(raw[m.id].published for m in sent), rule(
        "the acknowledgement lands once the storage takes it; nothing was sent twice",
        ([d.event_name for d in transport.delivered], [raw[m.id].published for m in sent]),
    )
