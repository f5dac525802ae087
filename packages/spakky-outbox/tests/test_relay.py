"""The relays against the in-memory reference and the recording transport."""

import asyncio
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import cast, override
from uuid import UUID, uuid4

import pytest
from relay_rig import RenewalRefusingStorage, make, names, relay_for
from spakky.event.event_publisher import IAsyncEventTransport
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.delivery.batch import (
    IFlushScopedTransport,
    PendingRecords,
    batches_in_flight,
)
from spakky.outbox.error import (
    OutboxDeliveryRefusedError,
    OutboxStorageFlavourMissingError,
    OutboxStorageUnavailableError,
)
from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage
from spakky.outbox.relay.relay import (
    AsyncOutboxRelayBackgroundService,
    OutboxRelayBackgroundService,
)
from spakky.outbox.relay.state import BatchOutcome, RelayPolicy
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    InMemoryOutboxHarness,
    InMemoryOutboxState,
    InMemoryOutboxStorage,
    RawOutboxRecord,
)
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordedEvent,
    RecordingEventTransport,
)


def config(**changes: object) -> OutboxConfig:
    """Defaults with ``changes`` applied."""
    return OutboxConfig().model_copy(update=changes)


def in_memory[S](
    storage: Callable[[InMemoryOutboxState, OutboxConfig], S], **changes: object
) -> tuple[InMemoryOutboxHarness, OutboxConfig, S]:
    """A fresh harness, the settings (1 s claims unless ``changes`` say otherwise) and a ``storage`` on its state."""
    harness = InMemoryOutboxHarness()
    cfg = config(**({"claim_timeout_seconds": 1.0} | changes))
    return harness, cfg, storage(harness.state, cfg)


class Rig:
    """A harness, an async relay and a recording transport wired together."""

    def __init__(
        self,
        storage: type[AsyncInMemoryOutboxStorage] = AsyncInMemoryOutboxStorage,
        transport: AsyncRecordingEventTransport | None = None,
        **changes: object,
    ) -> None:
        self.harness, self.config, self.storage = in_memory(storage, **changes)
        self.transport = AsyncRecordingEventTransport() if transport is None else transport
        self.relay = relay_for(self.storage, self.transport, self.config)

    def names(self) -> list[str]:
        return names(self.transport)

    async def drain(self, rounds: int = 50, step: float = 5.0) -> None:
        """Relay batches, moving the clock past backoffs, until nothing is pending."""
        for _ in range(rounds):
            await self.relay.relay_batch()
            if (await self.storage.stats()).pending == 0:
                return
            self.harness.clock.advance(step)


class SyncRig:
    """The same, for the sync relay: a harness, the thread relay and a recording transport."""

    def __init__(self, storage: type[InMemoryOutboxStorage] = InMemoryOutboxStorage, **changes: object) -> None:
        self.harness, self.config, self.storage = in_memory(storage, **changes)
        self.transport = RecordingEventTransport()
        self.relay = OutboxRelayBackgroundService(self.storage, self.transport, self.config)
        self.relay.set_stop_event(threading.Event())

    def names(self) -> list[str]:
        return names(self.transport)

    def raw(self) -> dict[str, RawOutboxRecord]:
        """The stored records by event name (a backdoor read, from the test's thread)."""
        return {r.event_name: r for r in asyncio.run(self.harness.raw_records())}


async def test_relay_batch_expect_one_flush_and_all_published() -> None:
    """A claimed batch is sent whole, flushed once and acknowledged."""
    rig = Rig()
    sent = [make(name=f"e{i}") for i in range(10)]
    await rig.harness.write(sent)
    await rig.relay.relay_batch()
    assert rig.names() == [f"e{i}" for i in range(10)]
    assert rig.transport.flush_calls == 1
    assert (await rig.storage.stats()).published == 10


async def test_relay_refusal_expect_budget_spent_and_key_held_back() -> None:
    """A refusal spends that message's budget, keeps the error and holds back its key only."""
    rig = Rig()
    await rig.harness.write([make("a", "a1"), make("a", "a2"), make("b", "b1"), make(None, "n1")])
    rig.transport.faults.refuse = lambda r: r.event_name == "a1"
    await rig.relay.relay_batch()
    assert rig.names() == ["b1", "n1"]
    raw = {r.event_name: r for r in await rig.harness.raw_records()}
    assert (raw["a1"].retry_count, raw["a2"].retry_count) == (1, 0)
    assert raw["a1"].last_error is not None and "refused a1" in raw["a1"].last_error
    assert not raw["a1"].claimed and not raw["a2"].claimed


async def test_relay_refusal_expect_no_later_message_of_key_overtakes() -> None:
    """After refusals the key is still delivered in order, the refused message first."""
    rig = Rig()
    await rig.harness.write([make("a", f"a{i}") for i in range(50)])
    refusals = {"a0": 2}

    def refuse(record: RecordedEvent) -> bool:
        left = refusals.get(record.event_name, 0)
        refusals[record.event_name] = left - 1
        return left > 0

    rig.transport.faults.refuse = refuse
    await rig.drain()
    assert rig.names() == [f"a{i}" for i in range(50)]


async def test_relay_outage_expect_no_budget_spent_and_batch_released_at_once() -> None:
    """An outage (every send fails) spends nobody's budget and releases the batch at once."""
    rig = Rig()
    await rig.harness.write([make("a", "a1"), make(None, "n1"), make("b", "b1")])
    rig.transport.faults.outage_calls = 100
    outcome = await rig.relay.relay_batch()
    assert outcome.outage
    raw = await rig.harness.raw_records()
    assert all(r.retry_count == 0 and not r.claimed for r in raw)
    rig.transport.faults.outage_calls = 0
    await rig.relay.relay_batch()
    assert rig.names() == ["a1", "n1", "b1"]


async def test_relay_transient_send_error_expect_retried_alone_and_delivered_uncharged() -> None:
    """A send that fails once while the rest goes through is retried alone and delivered."""
    rig = Rig()
    await rig.harness.write([make("a", "a1"), make("a", "a2"), make(None, "n1"), make("b", "b1")])
    rig.transport.faults.outage_calls = 1
    outcome = await rig.relay.relay_batch()
    assert not outcome.outage
    assert rig.names() == ["n1", "b1", "a1"]
    raw = {r.event_name: r for r in await rig.harness.raw_records()}
    assert [raw[n].retry_count for n in ("a1", "a2", "n1", "b1")] == [0, 0, 0, 0]
    assert (raw["a1"].published, raw["a2"].published, raw["a2"].claimed) == (True, False, False)
    await rig.relay.relay_batch()
    assert rig.names() == ["n1", "b1", "a1", "a2"]


def poison(record: RecordedEvent) -> Exception | None:
    """A plain error (not a refusal) for records named ``bad*``, as an oversized payload raises."""
    name = record.event_name
    return ValueError(f"{name} is too large for the broker") if name.startswith("bad") else None


def poisoned_rig() -> Rig:
    """A rig whose transport raises `poison`'s error."""
    rig = Rig()
    rig.transport.faults.fail = poison
    return rig


async def test_relay_poison_plain_error_expect_neighbours_once_and_poison_abandoned() -> None:
    """[ok1, ok2, bad, ok3]: every ok message is delivered once, ``bad`` is abandoned with its reason."""
    rig = poisoned_rig()
    await rig.harness.write([make(name="ok1"), make(name="ok2"), make(name="bad"), make(name="ok3")])
    await rig.drain()
    assert rig.names() == ["ok1", "ok2", "ok3"]
    abandoned = await rig.storage.list_abandoned()
    assert [m.event_name for m in abandoned] == ["bad"]
    assert abandoned[0].last_error == "ValueError: bad is too large for the broker"
    raw = {r.event_name: r for r in await rig.harness.raw_records()}
    assert all(raw[n].published for n in ("ok1", "ok2", "ok3"))


async def test_relay_poison_keyed_expect_key_held_until_abandoned_then_in_order() -> None:
    """A poison message holds its key back until abandoned; the key then goes on in order."""
    rig = poisoned_rig()
    await rig.harness.write([make("k", "k1"), make("k", "bad"), make("k", "k2"), make(None, "n1")])
    await rig.relay.relay_batch()
    assert rig.names() == ["k1", "n1"]
    await rig.drain()
    assert rig.names() == ["k1", "n1", "k2"]
    assert [m.event_name for m in await rig.storage.list_abandoned()] == ["bad"]


async def test_relay_three_plain_failures_in_a_row_expect_outage_and_earlier_sends_acknowledged() -> None:
    """Three plain failures in a row are an outage: what was sent before is kept, the rest released uncharged."""
    rig = poisoned_rig()
    names = ["ok1", "ok2", "bad1", "bad2", "bad3", "ok3"]
    await rig.harness.write([make(name=n) for n in names])
    outcome = await rig.relay.relay_batch()
    assert outcome.outage
    assert rig.names() == ["ok1", "ok2"]
    raw = {r.event_name: r for r in await rig.harness.raw_records()}
    assert [raw[n].published for n in names] == [True, True, False, False, False, False]
    assert all(raw[n].retry_count == 0 and not raw[n].claimed for n in names[2:])


async def test_relay_transport_closed_expect_batch_released_without_charge() -> None:
    """A closed transport (shutdown) charges nothing and leaves nothing claimed."""
    rig = Rig()
    await rig.harness.write([make(), make()])
    rig.transport.faults.closed = True
    assert (await rig.relay.relay_batch()).outage
    assert all(r.retry_count == 0 and not r.claimed for r in await rig.harness.raw_records())


async def test_relay_flush_outage_expect_released_without_charge() -> None:
    """A flush that fails as a whole releases the batch and charges nobody."""
    rig = Rig()
    await rig.harness.write([make(), make()])
    rig.transport.faults.outage_calls = 0

    original_flush = rig.transport.flush

    async def broken_flush() -> None:
        raise ConnectionError("broker gone")

    rig.transport.flush = broken_flush  # type: ignore[method-assign]
    assert (await rig.relay.relay_batch()).outage
    assert all(r.retry_count == 0 and not r.claimed for r in await rig.harness.raw_records())
    rig.transport.flush = original_flush  # type: ignore[method-assign]


async def test_relay_flush_refusal_expect_one_by_one_with_refused_charged() -> None:
    """A flush refusal is replayed one by one so only the refused message is charged."""
    rig = Rig()
    await rig.harness.write([make("a", "a1"), make("a", "a2"), make("b", "b1")])
    rig.transport.faults.refuse_at_flush = lambda r: r.event_name == "a1"
    await rig.relay.relay_batch()
    assert rig.names() == ["b1"]
    raw = {r.event_name: r for r in await rig.harness.raw_records()}
    assert (raw["a1"].retry_count, raw["a2"].retry_count, raw["b1"].published) == (1, 0, True)


class PositionRefusingTransport(AsyncRecordingEventTransport):
    """Like the outbox's own adapters: a flush delivers the batch but the records named ``bad*``, refused by position."""

    @override
    async def flush(self) -> None:
        recorder = self._recorder
        batch, recorder.buffered = recorder.buffered, []
        recorder.flushes += 1
        recorder.delivered.extend(r for r in batch if not r.event_name.startswith("bad"))
        refused = {i: f"too large: {r.event_name}" for i, r in enumerate(batch) if r.event_name.startswith("bad")}
        if refused:
            raise OutboxDeliveryRefusedError(refused)


async def test_relay_flush_refusal_by_position_expect_refused_charged_and_nothing_resent() -> None:
    """A flush refusal naming its records (OutboxDeliveryRefusedError): those are charged with their own reason, the rest published, nothing sent twice."""
    rig = Rig(transport=PositionRefusingTransport())
    await rig.harness.write([make("a", "bad-a1"), make("a", "a2"), make("b", "b1"), make(None, "bad-n1")])
    await rig.relay.relay_batch()
    assert (rig.transport.send_calls, rig.transport.flush_calls) == (4, 1)
    assert rig.names() == ["a2", "b1"]
    raw = {r.event_name: r for r in await rig.harness.raw_records()}
    assert [raw[n].retry_count for n in ("bad-a1", "a2", "b1", "bad-n1")] == [1, 0, 0, 1]
    assert [raw[n].published for n in ("bad-a1", "a2", "b1", "bad-n1")] == [False, True, True, False]
    assert raw["bad-a1"].last_error == "EventDeliveryRejectedError: too large: bad-a1"


async def test_relay_poison_expect_abandoned_on_backoff_schedule_with_last_error() -> None:
    """A poison message is abandoned after its retries, within about a minute, with its error kept."""
    rig = Rig()
    await rig.harness.write([make("a", "poison"), make("a", "next")])
    rig.transport.faults.refuse = lambda r: r.event_name == "poison"
    start = rig.harness.clock()
    attempts = 0
    while (await rig.storage.stats()).abandoned == 0:
        await rig.relay.relay_batch()
        attempts += 1
        rig.harness.clock.advance(0.25)
        assert attempts < 1000
    elapsed = (rig.harness.clock() - start).total_seconds()
    assert elapsed < 60
    abandoned = await rig.storage.list_abandoned()
    assert [m.event_name for m in abandoned] == ["poison"]
    assert abandoned[0].last_error is not None and "refused poison" in abandoned[0].last_error
    assert rig.transport.send_calls - len(rig.transport.delivered) == rig.config.max_retry_count
    await rig.relay.relay_batch()
    assert rig.names() == ["next"]


class FlakyStorage(AsyncInMemoryOutboxStorage):
    """Fails its first claims, as a database restart would."""

    failures = 3

    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionResetError("database restarted")
        return await super().fetch_pending(limit, max_retry)


async def wait_async(condition: object, timeout: float = 10.0) -> None:
    """Wait for ``condition()`` with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_relay_storage_error_expect_relay_keeps_running() -> None:
    """Storage errors are logged and backed off; the relay carries on and delivers."""
    rig = Rig(polling_interval_seconds=0.01)
    flaky = FlakyStorage(rig.harness.state, rig.config)
    relay = AsyncOutboxRelayBackgroundService(flaky, rig.transport, rig.config)
    relay.set_stop_event(asyncio.Event())
    rig.harness.state.clock = lambda: datetime.now(UTC)
    await rig.harness.write([make(name="x")])
    await relay.start_async()
    try:
        await wait_async(lambda: rig.names() == ["x"])
        assert flaky.failures == 0
    finally:
        await relay.stop_async()


async def test_relay_full_batch_expect_next_claim_without_sleep() -> None:
    """Full batches are followed at once by the next claim, whatever the polling interval."""
    rig = Rig(batch_size=10, polling_interval_seconds=3600)
    await rig.harness.write([make(name=f"e{i}") for i in range(35)])
    await rig.relay.start_async()
    try:
        await wait_async(lambda: len(rig.transport.delivered) == 35)
        assert rig.transport.flush_calls == 4
    finally:
        await rig.relay.stop_async()


class RaceLosingStorage(AsyncInMemoryOutboxStorage):
    """Comes back empty from its second claim, as when another relay took the rows it chose."""

    claims = 0

    @override
    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        self.claims += 1
        if self.claims == 2:
            return []
        return await super().fetch_pending(limit, max_retry)


async def test_relay_empty_claim_after_work_expect_backlog_claimed_again_before_polling_interval() -> None:
    """An empty claim right after work (a race lost to another relay) is retried soon, not after polling."""
    rig = Rig(RaceLosingStorage, batch_size=10, polling_interval_seconds=3600)
    await rig.harness.write([make(name=f"e{i}") for i in range(25)])
    await rig.relay.start_async()
    try:
        await wait_async(lambda: len(rig.transport.delivered) == 25, timeout=10)
    finally:
        await rig.relay.stop_async()


def test_relay_policy_empty_claims_after_work_expect_pause_grows_to_polling_interval() -> None:
    """After work, empty claims pause 50 ms, doubling, then the polling interval; never before work."""
    policy = RelayPolicy(config(polling_interval_seconds=1.0), None)
    empty, work = BatchOutcome(claimed=0), BatchOutcome(claimed=3)
    assert policy.idle_delay(empty) == 1.0
    assert policy.idle_delay(work) == 0.0
    delays = [policy.idle_delay(empty) for _ in range(7)]
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.idle_delay(work) == 0.0
    assert policy.idle_delay(empty) == 0.05


async def test_relay_wake_up_expect_delivery_before_polling_interval() -> None:
    """A commit wakes an idle relay long before its polling interval."""
    rig = Rig(polling_interval_seconds=3600)
    await rig.relay.start_async()
    try:
        await asyncio.sleep(0)
        await rig.harness.write([make(name="woken")])
        await wait_async(lambda: rig.names() == ["woken"], timeout=5)
    finally:
        await rig.relay.stop_async()


async def test_relay_stop_mid_batch_expect_no_message_left_claimed() -> None:
    """Stopping during a batch finishes what was sent and releases the rest."""
    rig = Rig()
    await rig.harness.write([make(name=f"e{i}") for i in range(10)])
    original_send = rig.transport.send

    async def send_then_stop(*args: object, **kwargs: object) -> None:
        await original_send(*args, **kwargs)  # type: ignore[arg-type]
        if rig.transport.send_calls == 3:
            rig.relay._stop_event.set()

    rig.transport.send = send_then_stop  # type: ignore[method-assign]
    await rig.relay.relay_batch()
    raw = await rig.harness.raw_records()
    assert rig.names() == ["e0", "e1", "e2"]
    assert sum(r.published for r in raw) == 3
    assert not any(r.claimed for r in raw)


class ScopedSlowTransport(IAsyncEventTransport, IFlushScopedTransport):
    """Flushes what the calling task sent, slowly (a broker's confirm latency), counting flushes in flight."""

    def __init__(self) -> None:
        self._pending: PendingRecords[OutboxMessage] = PendingRecords("test_relay_scoped_pending")
        self.delivered: list[tuple[str | None, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    @override
    async def send(
        self, event_name: str, payload: bytes, headers: dict[str, str], partition_key: str | None = None
    ) -> None:
        self._pending.add(
            OutboxMessage(uuid4(), event_name, payload, headers, datetime.now(UTC), partition_key=partition_key)
        )

    @override
    async def flush(self) -> None:
        records = self._pending.take()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.02)
        finally:
            self.in_flight -= 1
        self.delivered += [(r.partition_key, r.event_name) for r in records]


def test_relay_batches_in_flight_unset_expect_two_only_through_a_flush_scoped_transport() -> None:
    """Unset, a relay overlaps batches only through a transport whose flush confirms its caller's sends alone."""
    assert batches_in_flight(None, ScopedSlowTransport()) == 2
    assert batches_in_flight(None, AsyncRecordingEventTransport()) == 1
    assert batches_in_flight(3, AsyncRecordingEventTransport()) == 3


async def test_relay_two_batches_in_flight_expect_overlapping_flushes_and_key_order_kept() -> None:
    """A running relay flushes two batches at once through a scoped transport; each key still arrives in order, once."""
    harness = InMemoryOutboxHarness()
    cfg = config(claim_timeout_seconds=5.0, batch_size=10, polling_interval_seconds=0.01)
    harness.state.clock = lambda: datetime.now(UTC)
    storage = AsyncInMemoryOutboxStorage(harness.state, cfg)
    transport = ScopedSlowTransport()
    relay = AsyncOutboxRelayBackgroundService(storage, transport, cfg)
    relay.set_stop_event(asyncio.Event())
    await harness.write([make(f"k{i % 5}", f"{i // 5:03d}") for i in range(100)])
    await relay.start_async()
    await wait_async(lambda: len(transport.delivered) >= 100)
    await relay.stop_async()
    assert transport.most_in_flight == 2
    for key in {f"k{i}" for i in range(5)}:
        names = [name for k, name in transport.delivered if k == key]
        assert names == sorted(names) and len(names) == 20, (key, names)


async def test_relay_orderly_stop_expect_run_ends_with_nothing_claimed() -> None:
    """Stopping a running relay ends its task with no claim left behind."""
    rig = Rig(polling_interval_seconds=0.01)
    rig.transport.faults.flush_delay = 0.01
    rig.harness.state.clock = lambda: datetime.now(UTC)
    await rig.harness.write([make(name=f"e{i}") for i in range(300)])
    await rig.relay.start_async()
    await wait_async(lambda: len(rig.transport.delivered) >= 100)
    await rig.relay.stop_async()
    assert not any(r.claimed for r in await rig.harness.raw_records())


def test_sync_relay_refusal_and_outage_expect_same_taxonomy() -> None:
    """The sync relay charges refusals, not outages, and releases on outage."""
    rig = SyncRig()
    rig.harness.write_sync([make("a", "a1"), make("a", "a2"), make("b", "b1")])
    rig.transport.faults.outage_calls = 100
    assert rig.relay.relay_batch().outage
    rig.transport.faults.outage_calls = 0
    assert all(r.retry_count == 0 for r in rig.raw().values())
    rig.transport.faults.refuse = lambda r: r.event_name == "a1"
    rig.relay.relay_batch()
    assert rig.names() == ["b1"]
    raw = rig.raw()
    assert (raw["a1"].retry_count, raw["a2"].retry_count) == (1, 0)


def test_sync_relay_thread_expect_wakes_and_stops_cleanly() -> None:
    """The sync relay thread delivers on wake-up and stops with nothing claimed."""
    # the default claim timeout: this relay runs on the real clock
    rig = SyncRig(polling_interval_seconds=3600, claim_timeout_seconds=OutboxConfig().claim_timeout_seconds)
    rig.harness.state.clock = lambda: datetime.now(UTC)
    relay = rig.relay
    relay.start()
    try:
        rig.harness.write_sync([make(name="sync")])
        deadline = datetime.now(UTC).timestamp() + 5
        while rig.names() != ["sync"]:
            assert datetime.now(UTC).timestamp() < deadline
            relay._stop_event.wait(0.01)
    finally:
        relay.stop()
    assert not any(r.claimed for r in rig.raw().values())


class SixXStorage(IAsyncOutboxStorage):
    """A custom storage written against the 6.x docs: four methods only."""

    def __init__(self) -> None:
        self.rows: dict[UUID, dict[str, object]] = {}

    async def save(self, message: OutboxMessage) -> None:
        self.rows[message.id] = {"m": message, "retry": 0, "published": False, "claimed": False}

    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        out: list[OutboxMessage] = []
        for row in self.rows.values():
            if not row["published"] and not row["claimed"] and row["retry"] < max_retry:  # type: ignore[operator]
                row["claimed"] = True
                m: OutboxMessage = row["m"]  # type: ignore[assignment]
                out.append(OutboxMessage(m.id, m.event_name, m.payload, m.headers, m.created_at, None, row["retry"]))  # type: ignore[arg-type]
        return out[:limit]

    async def mark_published(self, message_id: UUID) -> None:
        self.rows[message_id]["published"] = True

    async def increment_retry(self, message_id: UUID) -> None:
        self.rows[message_id]["retry"] += 1  # type: ignore[operator]
        self.rows[message_id]["claimed"] = False


class EightFiveStorage(SixXStorage):
    """A custom storage written against the 8.5 docs: it also abandons."""

    async def mark_abandoned(self, message_id: UUID) -> None:
        self.rows[message_id]["abandoned"] = True
        self.rows[message_id]["claimed"] = True


@pytest.mark.parametrize("storage_type", [SixXStorage, EightFiveStorage])
async def test_relay_custom_storage_expect_delivery_and_abandonment(
    storage_type: type[SixXStorage],
) -> None:
    """Storages with only the 6.x or the 8.5 methods drive the relay to delivery and abandonment."""
    storage = storage_type()
    transport = AsyncRecordingEventTransport()
    cfg = config(max_retry_count=3)
    relay = AsyncOutboxRelayBackgroundService(storage, transport, cfg)
    relay.set_stop_event(asyncio.Event())
    good, poison = make(name="good"), make(name="poison")
    await storage.save(good)
    await storage.save(poison)
    transport.faults.refuse = lambda r: r.event_name == "poison"
    for _ in range(5):
        await relay.relay_batch()
    assert [d.event_name for d in transport.delivered] == ["good"]
    assert transport.send_calls == 1 + 3
    assert await storage.fetch_pending(10, 3) == []
    if storage_type is EightFiveStorage:
        assert storage.rows[poison.id].get("abandoned") is True
    else:
        assert storage.rows[poison.id]["retry"] == 3


def test_relay_ports_expect_mark_abandoned_default_spends_last_retry() -> None:
    """The port's default ``mark_abandoned`` spends the last retry (sync mirror)."""
    calls: list[UUID] = []

    class Minimal(IOutboxStorage):
        def save(self, message: OutboxMessage) -> None: ...
        def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
            return []
        def mark_published(self, message_id: UUID) -> None: ...
        def increment_retry(self, message_id: UUID) -> None:
            calls.append(message_id)

    target = uuid4()
    Minimal().mark_abandoned(target)
    assert calls == [target]


def test_backoff_delay_expect_growing_bounded_jittered() -> None:
    """Delays grow per attempt, stay within the cap and vary."""
    from spakky.outbox.relay.backoff import backoff_delay

    samples: Sequence[float] = [backoff_delay(a, 1.0, 30.0) for a in range(8)]
    assert all(0.5 * min(30, 2**a) <= s <= min(30, 2**a) for a, s in enumerate(samples))
    assert len({round(backoff_delay(3, 1.0, 30.0), 6) for _ in range(20)}) > 1


class ClosingStorage(AsyncInMemoryOutboxStorage):
    """Records whether the relay released its wake-up resources."""

    closed = False

    async def close_wake_up(self) -> None:
        self.closed = True


async def test_relay_stop_expect_wake_up_resources_released() -> None:
    """Stopping the relay releases the storage's wake-up resources (e.g. LISTEN)."""
    rig = Rig(ClosingStorage)
    await rig.relay.start_async()
    await rig.relay.stop_async()
    assert cast(ClosingStorage, rig.storage).closed


class AckFailingStorage(AsyncInMemoryOutboxStorage):
    """Fails its first acknowledgements and counts claims, as a storage restarting after a flush."""

    ack_failures = 4
    claims = 0

    async def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        self.claims += 1
        return await super().fetch_pending(limit, max_retry)

    async def mark_published_many(self, message_ids: Sequence[UUID]) -> int:
        if self.ack_failures > 0:
            self.ack_failures -= 1
            raise OutboxStorageUnavailableError("connection reset during restart")
        return await super().mark_published_many(message_ids)


async def test_relay_acknowledgement_fails_expect_retried_without_new_claim_or_resend() -> None:
    """Sent messages are acknowledged with retries; no new claim and no resend meanwhile."""
    rig = Rig(AckFailingStorage, claim_timeout_seconds=60.0)
    storage, relay = cast(AckFailingStorage, rig.storage), rig.relay
    await rig.harness.write([make(name=f"e{i}") for i in range(5)])
    await relay.relay_batch()
    assert storage.ack_failures == 0
    assert storage.claims == 1
    assert rig.names() == [f"e{i}" for i in range(5)]
    assert all(r.published for r in await rig.harness.raw_records())
    await relay.relay_batch()
    assert rig.transport.send_calls == 5


def test_sync_relay_acknowledgement_fails_expect_retried_until_taken() -> None:
    """The sync relay also retries an acknowledgement the storage failed to take."""

    class SyncAckFailing(InMemoryOutboxStorage):
        failures = 3

        def mark_published_many(self, message_ids: Sequence[UUID]) -> int:
            if self.failures > 0:
                self.failures -= 1
                raise OutboxStorageUnavailableError("restarting")
            return super().mark_published_many(message_ids)

    rig = SyncRig(SyncAckFailing, claim_timeout_seconds=60.0)
    rig.harness.write_sync([make(name="a"), make(name="b")])
    rig.relay.relay_batch()
    assert cast(SyncAckFailing, rig.storage).failures == 0
    assert all(r.published for r in rig.raw().values())


async def test_relay_acknowledgement_never_taken_expect_gives_up_after_claim_timeout() -> None:
    """An acknowledgement is retried only while the claim can still be ours: then the relay moves on."""
    rig = Rig(AckFailingStorage, claim_timeout_seconds=0.3)
    cast(AckFailingStorage, rig.storage).ack_failures = 10**9
    await rig.harness.write([make(name="x")])
    await asyncio.wait_for(rig.relay.relay_batch(), timeout=30)
    assert not any(r.published for r in await rig.harness.raw_records())


async def test_relay_slow_batch_expect_claims_renewed_and_kept() -> None:
    """A live relay on a batch slower than the lease keeps its claims: nobody else gets them."""
    rig = Rig(claim_lease_seconds=1.5, claim_timeout_seconds=60.0)
    rig.harness.state.clock = lambda: datetime.now(UTC)
    transport, relay = rig.transport, rig.relay
    transport.faults.send_delay = 0.3
    await rig.harness.write([make("k", f"k{i}") for i in range(12)])
    other = AsyncInMemoryOutboxStorage(rig.harness.state, rig.config)
    running = asyncio.ensure_future(relay.relay_batch())
    await wait_async(lambda: transport.send_calls > 0)
    # k10 and k11 wait behind the relay's claim on key "k": another claimer may
    # take them once k0-k9 are published (the relay may still be winding down),
    # never while one of the relay's batch is unsettled.
    taken_early: list[tuple[list[str], list[str]]] = []
    while not running.done():
        taken = await other.fetch_pending(100, 5)
        unsettled = [r.event_name for r in (await rig.harness.raw_records())[:10] if not r.published]
        if taken and unsettled:
            taken_early.append(([m.event_name for m in taken], unsettled))
        await asyncio.wait({running}, timeout=0.02)
    assert taken_early == []
    assert [d.event_name for d in transport.delivered] == [f"k{i}" for i in range(10)]
    assert all(r.published for r in (await rig.harness.raw_records())[:10])


async def test_relay_claims_lost_expect_rest_of_batch_not_sent() -> None:
    """Once renewal says the claims are gone, the relay sends nothing more of that batch."""
    rig = Rig(RenewalRefusingStorage, claim_lease_seconds=0.15, claim_timeout_seconds=60.0)
    rig.transport.faults.send_delay = 0.05
    await rig.harness.write([make(name=f"e{i}") for i in range(40)])
    await rig.relay.relay_batch()
    assert 0 < rig.transport.send_calls < 40


async def test_relay_without_storage_of_its_flavour_expect_clear_error() -> None:
    """A relay whose storage flavour is missing fails at construction, naming the setting."""
    with pytest.raises(OutboxStorageFlavourMissingError, match="SPAKKY_OUTBOX__RELAY=async"):
        AsyncOutboxRelayBackgroundService(None, AsyncRecordingEventTransport(), config())
    with pytest.raises(OutboxStorageFlavourMissingError, match="SPAKKY_OUTBOX__RELAY=sync"):
        OutboxRelayBackgroundService(None, RecordingEventTransport(), config())


async def test_relay_cycle_age_expect_none_before_run_then_recent() -> None:
    """A relay reports how long ago it finished a claim cycle (for health checks)."""
    rig = Rig(polling_interval_seconds=0.01)
    assert rig.relay.seconds_since_last_cycle is None
    await rig.relay.start_async()
    try:
        await wait_async(lambda: rig.relay.seconds_since_last_cycle is not None)
        age = rig.relay.seconds_since_last_cycle
        assert age is not None and age < 60
    finally:
        await rig.relay.stop_async()


def test_sync_relay_poison_plain_error_expect_neighbours_once_and_poison_charged() -> None:
    """The sync relay, too, delivers the neighbours of a poison message once and charges the poison."""
    rig = SyncRig()
    rig.transport.faults.fail = lambda r: ValueError("bad is too large") if r.event_name == "bad" else None
    rig.harness.write_sync([make(name="ok1"), make(name="bad"), make(name="ok2")])
    rig.relay.relay_batch()
    assert rig.names() == ["ok1", "ok2"]
    raw = rig.raw()
    assert (raw["bad"].retry_count, raw["bad"].last_error) == (1, "ValueError: bad is too large")
