"""The relay's hardening (issue 17): storable reasons, redaction, outages, leases, stranded budgets.

In-memory reference and recording transports; the same promises over every
real backend are rules of the conformance suite (``test_relay_*`` there).
"""

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from relay_rig import RenewalRefusingStorage, make, names, relay_for
from spakky.event.error import EventDeliveryRejectedError
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.reasons import MAX_REASON_BYTES, ascii_reason, storable_reason
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.outbox.ports.storage import IAsyncOutboxStorage
from spakky.outbox.relay.relay import OutboxRelayBackgroundService
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    InMemoryOutboxHarness,
    InMemoryOutboxStorage,
)
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordingEventTransport,
)


def config(**changes: object) -> OutboxConfig:
    """Defaults with ``changes`` applied (short claims, no retry backoff)."""
    base: dict[str, object] = {
        "claim_timeout_seconds": 30.0,
        "claim_lease_seconds": 1.0,
        "retry_backoff_base_seconds": 0.0,
        "retry_backoff_max_seconds": 0.0,
    }
    return OutboxConfig().model_copy(update=base | changes)


def refusing(reason: str) -> AsyncRecordingEventTransport:
    """A transport refusing every record with ``reason``."""
    transport = AsyncRecordingEventTransport()
    transport.faults.refuse = lambda r: True
    transport.faults.refusal_reason = lambda r: reason
    return transport


# --- item 1: every stored reason storable everywhere ---------------------------


def test_storable_reason_lone_surrogate_and_nul_expect_escaped() -> None:
    """A lone surrogate and a NUL byte become visible escapes; the rest of the text is kept."""
    text = storable_reason('refused {"name": "\udcff"} at \x00 offset')
    assert text == 'refused {"name": "\\udcff"} at \\x00 offset'
    text.encode("utf-8")  # encodable: no surrogate is left


def test_storable_reason_long_expect_cut_at_bound_on_character_boundary() -> None:
    """A 100 KB text of multi-byte characters is cut at a character boundary within the bound and says so."""
    text = storable_reason("é" * 50_000 + "\U0001f4e6" * 1000)
    encoded = text.encode("utf-8")
    assert len(encoded) <= MAX_REASON_BYTES
    assert text.startswith("é" * 100) and text.endswith(" bytes cut]")
    cut = int(text.rsplit("[", 1)[1].split()[0])
    assert cut == 100_000 + 4000 - len(text.split(" ... [")[0].encode())


def test_storable_reason_short_clean_text_expect_unchanged_and_idempotent() -> None:
    """Clean text passes through as it is, and cleaning twice changes nothing."""
    for text in ("EventDeliveryRejectedError: no route", storable_reason("x\udcff" * 9000)):
        assert storable_reason(text) == text


def test_storable_reason_long_body_expect_fast() -> None:
    """A megabyte of text (a whole response body) is cleaned quickly: only what can be kept is worked on."""
    started = time.perf_counter()
    storable_reason("x" * 1_000_000)
    assert time.perf_counter() - started < 1.0


def test_ascii_reason_expect_only_ascii_within_bound() -> None:
    """The last-resort reason holds only ASCII, for a column whose charset refuses the rest."""
    text = ascii_reason("é\U0001f4e6" * 5000)
    assert text.isascii() and len(text) <= MAX_REASON_BYTES and text.startswith("\\xe9\\U0001f4e6")


class PickyReasonStorage(AsyncInMemoryOutboxStorage):
    """Refuses any non-ASCII reason, as a latin1 column does, and counts attempts."""

    attempts = 0

    async def schedule_retry(self, message_id: UUID, delay_seconds: float, error: str) -> None:
        self.attempts += 1
        if not error.isascii():
            raise OutboxStorageUnavailableError("(1366) Incorrect string value")
        await super().schedule_retry(message_id, delay_seconds, error)


async def test_relay_reason_column_refuses_non_ascii_expect_last_attempt_lands_escaped() -> None:
    """When a column refuses the reason's characters, the last attempt writes it escaped and lands."""
    harness = InMemoryOutboxHarness()
    cfg = config()
    storage = PickyReasonStorage(harness.state, cfg)
    transport = refusing("colis \U0001f4e6 refusé")
    await harness.write([make(name="m")])
    await relay_for(storage, transport, cfg).relay_batch()
    raw = (await harness.raw_records())[0]
    assert (raw.retry_count, raw.claimed, storage.attempts) == (1, False, 4)
    assert raw.last_error == "EventDeliveryRejectedError: colis \\U0001f4e6 refus\\xe9"


class BrokenRowStorage(AsyncInMemoryOutboxStorage):
    """Every write about one message fails, whatever its text (a row the database will not update)."""

    broken: UUID | None = None

    async def schedule_retry(self, message_id: UUID, delay_seconds: float, error: str) -> None:
        if message_id == self.broken:
            raise OutboxStorageUnavailableError("row is corrupt")
        await super().schedule_retry(message_id, delay_seconds, error)

    async def abandon(self, message_id: UUID, error: str) -> None:
        if message_id == self.broken:
            raise OutboxStorageUnavailableError("row is corrupt")
        await super().abandon(message_id, error)


async def test_relay_refusal_write_keeps_failing_for_one_message_expect_relay_goes_on() -> None:
    """A refusal that can never be written holds the relay up for a few attempts, not a claim timeout."""
    harness = InMemoryOutboxHarness()
    harness.state.clock = lambda: datetime.now(UTC)
    cfg = config(claim_timeout_seconds=300.0, claim_lease_seconds=300.0)
    storage = BrokenRowStorage(harness.state, cfg)
    poison, other = make("p", name="poison"), make(name="other")
    storage.broken = poison.id
    transport = AsyncRecordingEventTransport()
    transport.faults.refuse = lambda r: r.event_name == "poison"
    await harness.write([poison, other])
    relay = relay_for(storage, transport, cfg)
    started = time.monotonic()
    await asyncio.wait_for(relay.relay_batch(), timeout=30)
    assert time.monotonic() - started < 10
    assert names(transport) == ["other"]
    await harness.write([later := make(name="later")])
    await asyncio.wait_for(relay.relay_batch(), timeout=30)
    assert names(transport) == ["other", "later"], later
    raw = {r.event_name: r for r in await harness.raw_records()}
    assert (raw["poison"].retry_count, raw["poison"].published) == (0, False)


# --- item 11: credentials never stored, logged or printed ------------------------


async def test_relay_refusal_with_credentials_expect_redacted_in_storage_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker error quoting a URL with a password is stored and logged without it."""
    harness = InMemoryOutboxHarness()
    cfg = config()
    storage = AsyncInMemoryOutboxStorage(harness.state, cfg)
    transport = refusing("POST https://relay:S3cretPw@hooks.example/x failed; password=S3cretPw")
    await harness.write([make(name="m")])
    with caplog.at_level(logging.DEBUG):
        await relay_for(storage, transport, cfg).relay_batch()
    raw = (await harness.raw_records())[0]
    assert raw.last_error is not None and "S3cretPw" not in raw.last_error
    assert "https://***@hooks.example/x" in raw.last_error
    assert "S3cretPw" not in caplog.text and "***" in caplog.text


# --- item 5: an outage spends nobody's budget, known poison included ---------------


async def test_relay_full_outage_with_known_poison_alone_expect_no_budget_spent() -> None:
    """After one blip made ``bad`` known poison, a full outage with ``bad`` alone left spends nothing."""
    harness = InMemoryOutboxHarness()
    cfg = config(max_retry_count=3)
    storage = AsyncInMemoryOutboxStorage(harness.state, cfg)
    transport = AsyncRecordingEventTransport()
    transport.faults.fail = lambda r: ValueError("bad is too large for the broker") if r.event_name == "bad" else None
    relay = relay_for(storage, transport, cfg)
    await harness.write([make(name="ok"), make("k", name="bad")])
    await relay.relay_batch()  # ok goes through, bad fails alone: poison, charged once
    assert [(r.event_name, r.retry_count) for r in await harness.raw_records()] == [("ok", 0), ("bad", 1)]
    transport.faults.outage_until = math.inf  # the broker is down
    for _ in range(10):
        outcome = await relay.relay_batch()
        assert outcome.outage
        harness.clock.advance(1)
    bad = next(r for r in await harness.raw_records() if r.event_name == "bad")
    assert (bad.retry_count, bad.abandoned, bad.claimed) == (1, False, False)
    transport.faults.outage_until = 0.0
    for _ in range(5):
        await relay.relay_batch()
        harness.clock.advance(1)
    bad = next(r for r in await harness.raw_records() if r.event_name == "bad")
    assert bad.abandoned and bad.last_error == "ValueError: bad is too large for the broker"


# --- item 3 / 20: what a relay does once it knows its lease is in doubt -------------


class RenewalFailingStorage(AsyncInMemoryOutboxStorage):
    """Renewals fail (the storage cannot be reached for them)."""

    async def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        raise OutboxStorageUnavailableError("connection reset")


@pytest.mark.parametrize("storage_type", [RenewalRefusingStorage, RenewalFailingStorage])
async def test_relay_renewal_refused_or_failed_expect_no_more_sends(
    storage_type: type[AsyncInMemoryOutboxStorage],
) -> None:
    """A refused or failed renewal stops the batch: nothing more is sent; a refused one flushes nothing either."""
    harness = InMemoryOutboxHarness()
    cfg = config(claim_lease_seconds=0.3)
    storage = storage_type(harness.state, cfg)
    transport = AsyncRecordingEventTransport()
    transport.faults.send_delay = 0.05
    await harness.write([make(name=f"e{i}") for i in range(40)])
    await relay_for(storage, transport, cfg).relay_batch()
    assert 0 < transport.send_calls < 40
    if storage_type is RenewalRefusingStorage:
        assert transport.flush_calls == 0 and names(transport) == []
    raw = await harness.raw_records()
    assert not any(r.published for r in raw[transport.send_calls :])


class StallingStorage(AsyncInMemoryOutboxStorage):
    """Blocks the whole relay (its thread) right after a claim, as a SIGSTOP or a long GC pause does."""

    stall = 0.0

    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        got = await super().fetch_pending(limit, max_retry)
        time.sleep(self.stall)  # the point: nothing of this event loop runs, renewals included
        return got


async def test_relay_frozen_past_lease_after_claim_expect_nothing_sent() -> None:
    """A relay frozen past its lease between claim and send sends and flushes nothing of that batch."""
    harness = InMemoryOutboxHarness()
    harness.state.clock = lambda: datetime.now(UTC)
    cfg = config(claim_lease_seconds=0.3)
    storage = StallingStorage(harness.state, cfg)
    storage.stall = 0.5
    transport = AsyncRecordingEventTransport()
    await harness.write([make("k", name="k1"), make(name="free")])
    await relay_for(storage, transport, cfg).relay_batch()
    assert (transport.send_calls, transport.flush_calls) == (0, 0)
    assert all(not r.claimed and r.retry_count == 0 for r in await harness.raw_records())


def test_sync_relay_frozen_past_lease_after_claim_expect_nothing_sent() -> None:
    """The sync relay, too, sends nothing of a batch whose lease it outlived before sending."""

    class SyncStalling(InMemoryOutboxStorage):
        def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
            got = super().fetch_pending(limit, max_retry)
            time.sleep(0.5)
            return got

    harness = InMemoryOutboxHarness()
    harness.state.clock = lambda: datetime.now(UTC)
    cfg = config(claim_lease_seconds=0.3)
    transport = RecordingEventTransport()
    harness.write_sync([make(name="a"), make(name="b")])
    OutboxRelayBackgroundService(SyncStalling(harness.state, cfg), transport, cfg).relay_batch()
    assert (transport.send_calls, transport.flush_calls) == (0, 0)


# --- item 6: lowered MAX_RETRY_COUNT ----------------------------------------------


async def test_relay_message_over_lowered_budget_expect_abandoned_unsent_and_key_goes_on() -> None:
    """A message refused more often than the (lowered) setting allows is abandoned unsent; its key goes on."""
    harness = InMemoryOutboxHarness()
    cfg = config(max_retry_count=2)
    storage = AsyncInMemoryOutboxStorage(harness.state, cfg)
    transport = AsyncRecordingEventTransport()
    await harness.write([make("k", name="spent", retry_count=4), make("k", name="next")])
    await relay_for(storage, transport, cfg).relay_batch()
    assert names(transport) == ["next"]
    abandoned = await storage.list_abandoned()
    assert [m.event_name for m in abandoned] == ["spent"]
    assert abandoned[0].last_error is not None and "MAX_RETRY_COUNT=2" in abandoned[0].last_error


# --- issue 16 item 1: storages without retry scheduling, as 8.5 ---------------------


class EightFiveAsyncStorage(IAsyncOutboxStorage):
    """A custom storage written to the 8.5 docs: the five methods, nothing else."""

    def __init__(self, pending: list[OutboxMessage]) -> None:
        self.pending = pending
        self.published: list[str] = []
        self.retried: list[str] = []
        self.abandoned: list[str] = []

    async def save(self, message: OutboxMessage) -> None:
        self.pending.append(message)

    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        return [m for m in self.pending if m.retry_count < max_retry][:limit]

    async def mark_published(self, message_id: UUID) -> None:
        self.published.append(self._name(message_id))

    async def increment_retry(self, message_id: UUID) -> None:
        self.retried.append(self._name(message_id))

    async def mark_abandoned(self, message_id: UUID) -> None:
        self.abandoned.append(self._name(message_id))

    def _name(self, message_id: UUID) -> str:
        return next(m.event_name for m in self.pending if m.id == message_id)


@pytest.mark.parametrize("refused_at", ["send", "flush"])
async def test_relay_8_5_storage_budget_spent_expect_abandoned_and_next_of_key_published_same_cycle(
    refused_at: str,
) -> None:
    """With an 8.5-style storage, a refusal spending the budget abandons and the key's next goes out in that cycle."""
    storage = EightFiveAsyncStorage([make("ORD", name="exhausted", retry_count=2), make("ORD", name="following")])
    transport = AsyncRecordingEventTransport()
    if refused_at == "send":
        transport.faults.refuse = lambda r: r.event_name == "exhausted"
    else:
        transport.faults.refuse_at_flush = lambda r: r.event_name == "exhausted"
    await relay_for(storage, transport, config(max_retry_count=3)).relay_batch()
    assert (storage.abandoned, storage.retried, names(transport), storage.published) == (
        ["exhausted"], [], ["following"], ["following"]
    )


def test_refusal_error_type_expect_event_delivery_rejected() -> None:
    """The recording transport's refusals stay `EventDeliveryRejectedError` with the reason given."""
    transport = RecordingEventTransport()
    transport.faults.refuse = lambda r: True
    transport.faults.refusal_reason = lambda r: f"no route for {r.event_name}"
    with pytest.raises(EventDeliveryRejectedError) as caught:
        transport.send("E", b"{}", {})
    assert caught.value.reasons == ["no route for E"]


# --- item 15: a byte budget per claim ---------------------------------------------


def sized(size: int, key: str | None = None, name: str = "Evt") -> OutboxMessage:
    """A message whose payload is ``size`` bytes."""
    return OutboxMessage(uuid4(), name, b"x" * size, {}, datetime.now(UTC), partition_key=key)


async def test_claim_byte_budget_expect_batch_stops_at_budget_and_huge_message_goes_alone() -> None:
    """A claim holds at most BATCH_MAX_BYTES of payloads (20 x 10 MB came in one claim); one larger message still goes.

    Issue 17.15: nothing bounded bytes per claim.
    """
    harness = InMemoryOutboxHarness()
    cfg = config(batch_max_bytes=3 * 1024 * 1024)
    mib = 1024 * 1024
    await harness.write([sized(mib, key="k", name=f"m{i}") for i in range(7)] + [sized(5 * mib, name="huge")])
    storage = AsyncInMemoryOutboxStorage(harness.state, cfg)
    batches: list[list[str]] = []
    while claimed := await storage.fetch_pending(100, 5):
        batches.append([m.event_name for m in claimed])
        assert sum(len(m.payload) for m in claimed) <= cfg.batch_max_bytes or len(claimed) == 1
        await storage.mark_published_many([m.id for m in claimed])
    assert batches == [["m0", "m1", "m2"], ["m3", "m4", "m5"], ["m6"], ["huge"]]


async def test_relay_byte_budget_expect_every_message_delivered_in_key_order() -> None:
    """Under a byte budget the relay delivers everything, key order kept, in claims no larger than the budget."""
    harness = InMemoryOutboxHarness()
    cfg = config(batch_max_bytes=4096)
    await harness.write([sized(1500, key=f"k{i % 2}", name=f"e{i}") for i in range(9)])
    transport = AsyncRecordingEventTransport()
    relay = relay_for(AsyncInMemoryOutboxStorage(harness.state, cfg), transport, cfg)
    claims = 0
    while (await relay.relay_batch()).claimed:
        claims += 1
    assert claims == 5
    assert names(transport) == [f"e{i}" for i in range(9)]
