"""Fault drills with real relay processes: kill, cut, outage, poison, slow broker.

Each drill asserts correctness only (nothing lost, no key reordered, nothing
duplicated beyond what the fault allows, poison abandoned with its reason) and
reports counts and recovery times in the session's "outbox fault injection"
section; rates and recovery bars are measured by ``make bench``.
"""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from spakky.outbox.ports.storage import IAsyncOutboxAdministration

from tests.faults.drill import RELAY_SETTINGS, Drill, Target, resume_after
from tests.faults.proxy import FaultProxy
from tests.faults.targets import WIRE_TARGET

BATCH = int(RELAY_SETTINGS["SPAKKY_OUTBOX__BATCH_SIZE"])
SETTLE_SECONDS = 120.0
"""Deadline for an outbox to drain after a fault (a loaded 2-core machine included)."""


@pytest.fixture(params=["postgres", "mariadb", "sqlite", "redis"])
def target(request: pytest.FixtureRequest) -> Target:
    """Every backend in turn; only its own service is resolved."""
    return request.getfixturevalue(f"{request.param}_target")


@pytest.fixture(params=["postgres", "mariadb", "redis"])
def network_target(request: pytest.FixtureRequest) -> Target:
    """The backends reached over TCP, behind a fault proxy."""
    return request.getfixturevalue(f"{request.param}_target")


@pytest.fixture(params=["postgres", "redis"])
def main_target(request: pytest.FixtureRequest) -> Target:
    """The two backends the slow-broker drill runs on."""
    return request.getfixturevalue(f"{request.param}_target")


def _assert_exact(report_text: str, lost: int, reorderings: int) -> None:
    assert lost == 0, f"events lost: {report_text}"
    assert reorderings == 0, f"a key's events were reordered: {report_text}"


async def test_drill_sigkill_relay_with_poison_expect_nothing_lost_and_keys_resumed(
    target: Target, control: Path
) -> None:
    """SIGKILL one of three relays (SQLite: its only relay, then a replacement) mid-drain of a load with poison.

    Poison events (1 in 100) fail with a plain error: they are abandoned with the
    reason while their neighbours go through once (fresh events keep arriving,
    as in a live service); the killed relay's keys are taken over once its lease
    lapses.
    """
    relays = 1 if target.name == "sqlite" else 3
    drill = Drill(target, control, relays=relays, flush_delay=0.05)
    await drill.load(3000, keys=30, poison_every=100)
    try:
        drill.start()
        async with drill.live_traffic():
            await drill.wait_delivered(600, 60, "deliveries before the kill")
            killed_at = time.monotonic()
            drill.kill(0)
            if relays == 1:
                drill.spawn_replacement()
            await drill.wait_abandoned(30, SETTLE_SECONDS)
        await drill.wait_settled(SETTLE_SECONDS)
    finally:
        drill.stop()
    report = await drill.report("SIGKILL a relay mid-drain, poison 1 in 100, live traffic")
    report.recovery = (
        f"every key resumed within {resume_after(drill.deliveries(), killed_at, per_key=True):.1f} s of the kill "
        f"(lease {RELAY_SETTINGS['SPAKKY_OUTBOX__CLAIM_LEASE_SECONDS']} s"
        f"{', replacement process start included' if relays == 1 else ''})"
    )
    _assert_exact(report.line(), report.lost, report.reorderings)
    assert report.duplicates <= BATCH, f"more duplicates than one unacknowledged batch: {report.line()}"
    assert report.abandoned == len(drill.poison) == 30, f"poison events not abandoned: {report.line()}"
    storage = target.storage
    assert isinstance(storage, IAsyncOutboxAdministration)
    reasons = {m.last_error for m in await storage.list_abandoned(limit=100)}
    assert all(r is not None and "too large for the broker" in r for r in reasons), reasons


PAUSE_LEASES = 3
"""How many leases a paused relay stays stopped."""


@pytest.fixture(params=["postgres", "mariadb", "sqlite", "redis", "mongodb"])
def pause_target(request: pytest.FixtureRequest) -> Target:
    """Every backend in turn, MongoDB included (its events are all committed before the relays start)."""
    return request.getfixturevalue(f"{request.param}_target")


async def test_drill_relay_paused_past_its_lease_expect_nothing_lost_and_stale_bounded_by_one_batch(
    pause_target: Target, control: Path
) -> None:
    """SIGSTOP a relay for three leases mid-drain (a GC pause, a frozen VM), then SIGCONT it (issue 17.3).

    The others take its keys over once its lease lapses. Resumed, it sends
    nothing more of the batch it lost; only a send already inside the broker
    call when the pause hit (here, the 200 ms flush) can land late, so what a
    consumer sees step back stays within one batch, and first deliveries keep
    key order. On SQLite, whose drills run one relay, a second relay starts
    while the first is paused. On MongoDB without MONGODB_URL the server is the
    mongoeco wire server in a process of its own (it cannot commit a transaction
    while another write commits, so every event is committed before the relays
    start, as this drill does on every backend); claims and acknowledgements are
    single atomic updates fenced by the claim token, which it serves to all relays.
    """
    target = pause_target
    relays = 1 if target.name == "sqlite" else 3
    settings = RELAY_SETTINGS | target.relay_settings
    lease = float(settings["SPAKKY_OUTBOX__CLAIM_LEASE_SECONDS"])
    drill = Drill(target, control, relays=relays, flush_delay=0.2, settings=settings)
    # The wire server drains about 15 events a second: a third of the load.
    events = 1000 if target.name == WIRE_TARGET else 3000
    await drill.load(events, keys=30)
    try:
        drill.start()
        await drill.wait_delivered(events // 5, 60, "deliveries before the pause")
        last_pid = drill.deliveries()[-1].pid
        paused = next(i for i, w in enumerate(drill.workers) if w.pid == last_pid)
        # Fault timing, not a wait: half a flush after its last delivery the relay
        # is most likely inside its next flush, the window only the inbox closes.
        await asyncio.sleep(0.1)
        drill.pause(paused, True)
        paused_at = time.monotonic()
        if relays == 1:
            drill.spawn_replacement()
        # The pause itself (a frozen process for three leases), not a wait for something.
        await asyncio.sleep(PAUSE_LEASES * lease)
        drill.pause(paused, False)
        await drill.wait_settled(SETTLE_SECONDS)
    finally:
        drill.stop()
    report = await drill.report(f"relay paused (SIGSTOP) for {PAUSE_LEASES} leases mid-drain")
    report.recovery = (
        f"every key resumed within {resume_after(drill.deliveries(), paused_at, per_key=True):.1f} s of the pause "
        f"(lease {lease:g} s)"
    )
    _assert_exact(report.line(), report.lost, report.reorderings)
    assert report.stale <= BATCH, f"a consumer saw more than one batch step back: {report.line()}"
    assert report.duplicates <= BATCH and report.abandoned == 0, report.line()


async def test_drill_storage_cut_mid_drain_expect_acknowledged_and_resumed(
    network_target: Target, control: Path, proxy_for: dict[str, FaultProxy]
) -> None:
    """Cut every relay's connection to the storage for one second mid-drain."""
    drill = Drill(network_target, control, relays=3, flush_delay=0.05)
    await drill.load(3000, keys=30)
    proxy = proxy_for[network_target.name]
    try:
        drill.start()
        await drill.wait_delivered(600, 60, "deliveries before the cut")
        proxy.cut()
        await asyncio.sleep(1.0)  # the outage itself, not a wait for something
        proxy.restore()
        restored_at = time.monotonic()
        await drill.wait_settled(SETTLE_SECONDS)
    finally:
        drill.stop()
    report = await drill.report("storage cut for 1 s mid-drain")
    report.recovery = (
        f"deliveries resumed {resume_after(drill.deliveries(), restored_at, per_key=False):.1f} s "
        "after the storage came back"
    )
    _assert_exact(report.line(), report.lost, report.reorderings)
    assert report.duplicates <= BATCH, report.line()
    assert report.abandoned == 0, report.line()


@pytest.fixture(params=["private-postgres", "private-redis"])
def private_target(request: pytest.FixtureRequest) -> Target:
    """A backend on a private server of our own, which the drill restarts."""
    return request.getfixturevalue(f"{request.param.replace('-', '_')}_target")


async def test_drill_storage_restart_mid_drain_expect_acknowledged_and_resumed(
    private_target: Target, control: Path, restartable: dict[str, Callable[[], None]]
) -> None:
    """Restart the storage server (PostgreSQL fast restart, Redis with AOF) mid-drain."""
    drill = Drill(private_target, control, relays=3, flush_delay=0.05)
    await drill.load(3000, keys=30)
    try:
        drill.start()
        await drill.wait_delivered(600, 60, "deliveries before the restart")
        restart_at = time.monotonic()
        await asyncio.to_thread(restartable[private_target.name])
        back_at = time.monotonic()
        await drill.wait_settled(SETTLE_SECONDS)
    finally:
        drill.stop()
    report = await drill.report("storage server restarted mid-drain")
    deliveries = drill.deliveries()
    report.recovery = (
        f"server down and up in {back_at - restart_at:.1f} s; deliveries resumed "
        f"{resume_after(deliveries, back_at, per_key=False):.1f} s after it accepted connections again"
    )
    _assert_exact(report.line(), report.lost, report.reorderings)
    assert report.duplicates <= BATCH, report.line()
    assert report.abandoned == 0, report.line()


async def test_drill_broker_outage_ten_seconds_expect_no_budget_spent(
    postgres_target: Target, control: Path
) -> None:
    """The broker refuses every call for 10 s mid-drain: nobody's retry budget is spent."""
    drill = Drill(postgres_target, control, relays=2, flush_delay=0.02)
    await drill.load(2000, keys=20)
    try:
        drill.start()
        await drill.wait_delivered(400, 60, "deliveries before the outage")
        drill.broker_outage(True)
        await asyncio.sleep(10.0)  # the outage itself
        drill.broker_outage(False)
        back_at = time.monotonic()
        await drill.wait_settled(SETTLE_SECONDS)
    finally:
        drill.stop()
    report = await drill.report("broker outage 10 s")
    report.recovery = (
        f"deliveries resumed {resume_after(drill.deliveries(), back_at, per_key=False):.1f} s "
        "after the broker came back"
    )
    _assert_exact(report.line(), report.lost, report.reorderings)
    assert report.abandoned == 0, f"an outage spent retry budget: {report.line()}"
    assert report.duplicates == 0, report.line()


async def test_drill_slow_broker_one_then_three_relays_expect_exact_delivery(
    main_target: Target, tmp_path: Path
) -> None:
    """A 50 ms flush with 1, then 3 relays over 100 keys: exact delivery both ways (speed reported)."""
    seconds: dict[int, float] = {}
    for relays in (1, 3):
        control = tmp_path / f"relays-{relays}"
        control.mkdir()
        drill = Drill(main_target, control, relays=relays, flush_delay=0.05)
        await drill.load(2000, keys=100)
        try:
            drill.start()
            started = time.monotonic()
            await drill.wait_delivered(2000, SETTLE_SECONDS, f"drain with {relays} relays")
            seconds[relays] = time.monotonic() - started
            await drill.wait_settled(SETTLE_SECONDS)
        finally:
            drill.stop()
        report = await drill.report(f"50 ms flush, {relays} relay(s), 100 keys")
        report.recovery = f"drained 2000 in {seconds[relays]:.1f} s"
        if relays == 3:
            report.notes.append(f"{seconds[1] / seconds[3]:.2f}x faster than 1 relay in this run")
        _assert_exact(report.line(), report.lost, report.reorderings)
        assert report.duplicates == 0 and report.abandoned == 0, report.line()


async def test_drill_three_relays_fast_sink_expect_exactly_once_in_key_order_and_clean_stop(
    main_target: Target, tmp_path: Path
) -> None:
    """Three relays, batches of 100, no flush delay (they compete on the storage alone): once each, keys in order."""
    events, keys = 2000, 40
    drill = Drill(main_target, tmp_path, relays=3, settings=RELAY_SETTINGS | {"SPAKKY_OUTBOX__BATCH_SIZE": "100"})
    await drill.load(events, keys=keys)
    try:
        drill.start()
        started = time.monotonic()
        await drill.wait_delivered(events, SETTLE_SECONDS, "drain with 3 relays")
        took = time.monotonic() - started
        await drill.wait_settled(SETTLE_SECONDS)
    finally:
        drill.stop()
    assert [w.returncode for w in drill.workers] == [0, 0, 0], f"relays did not stop cleanly; see {tmp_path}/relay-*.log"
    report = await drill.report(f"no flush delay, 3 relays, {keys} keys")
    report.recovery = f"drained {events} in {took:.1f} s"
    _assert_exact(report.line(), report.lost, report.reorderings)
    assert (report.committed, report.delivered) == (events, events), report.line()
    assert report.duplicates == 0 and report.abandoned == 0, report.line()


async def test_relay_clean_stop_expect_exit_0_and_nothing_on_stderr_but_logs(target: Target, control: Path) -> None:
    """A relay stopped cleanly (stop file) exits 0 and prints no traceback (issue 17.21).

    On MariaDB aiomysql printed "Event loop is closed" at every exit: the pool's
    connections outlived the application's loop.
    """
    drill = Drill(target, control, relays=1)
    await drill.load(20, keys=2)
    try:
        drill.start()
        await drill.wait_delivered(20, SETTLE_SECONDS, "deliveries before the stop")
    finally:
        drill.stop()
    log = (control / "relay-0.log").read_text(errors="replace")
    assert drill.workers[0].returncode == 0, log
    assert "Traceback" not in log and "Exception ignored" not in log, log
