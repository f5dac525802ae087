"""Three relay processes draining one outbox without a broker in the way.

The RabbitMQ end-to-end tests stay small because spakky-rabbitmq 8.5 opens one
AMQP connection per message. Here each relay process is the same Spakky app
(``relay_worker.py``, real `AsyncOutboxRelayBackgroundService`) but relays to
`file_sink.FileSinkEventTransport`, which appends ``KEY SEQ NS`` lines to a
per-process file, so the storage's claim / acknowledge path is what the
processes compete on, with larger batches. The checks: every event delivered
exactly once, each key's events in order across processes (CLOCK_MONOTONIC
stamps compare system-wide on Linux), and every outbox row published
afterwards. Speed is `make bench`'s business, not this test's.
"""

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
import redis
from spakky.outbox.common.config import OutboxConfig
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.storage import AsyncRedisOutboxStorage
from spakky.plugins.outbox_sqlalchemy.schema import (
    drop_outbox_table,
)
from sqlalchemy import create_engine, make_url, text

from .common import (
    LOAD_RELAYS,
    SINK_LOAD,
    Load,
    patched_environ,
    preload_redis_outbox,
    preload_sql_outbox,
    start_workers,
    stop_workers,
)
from .file_sink import SinkRecord, count_sink_lines, read_sink_records
from .relay_worker import SINK_MODE

POLL_SECONDS = 0.02


@dataclass(frozen=True)
class RelayTarget:
    """One outbox backend, configured through the environment for the relays."""

    backend: str
    """``relay_worker.py`` BACKEND argument."""
    preload: Callable[[str, Load], Awaitable[None]]
    """Stores ``load.message(i, event_name)`` for every ``i`` in order."""
    unpublished: Callable[[], Awaitable[tuple[int, int]]]
    """``(stored rows, rows not yet published)`` of the outbox."""


@pytest.fixture
def sqlalchemy_target(postgres_url: str) -> Iterator[RelayTarget]:
    """A fresh PostgreSQL outbox table; the relays use asyncpg."""
    url = make_url(postgres_url)
    async_url = url.set(drivername="postgresql+asyncpg").render_as_string(
        hide_password=False
    )
    engine = create_engine(url.set(drivername="postgresql+psycopg"))
    table_name = f"e2e_outbox_{uuid.uuid4().hex[:16]}"
    env = {
        "SPAKKY_SQLALCHEMY__CONNECTION_STRING": async_url,
        "SPAKKY_OUTBOX__STORAGE": "sqlalchemy",
        "SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05",
        "SPAKKY_OUTBOX_SQLALCHEMY__TABLE_NAME": table_name,
    }

    async def preload(event_name: str, load: Load) -> None:
        """Bulk-INSERT the load messages in order."""
        await preload_sql_outbox(async_url, table_name, event_name, load)

    async def unpublished() -> tuple[int, int]:
        def query() -> tuple[int, int]:
            with engine.connect() as connection:
                total, pending = connection.execute(
                    text(
                        f"SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) "
                        f"FROM {table_name}"
                    )
                ).one()
            return int(total), int(pending)

        return await asyncio.to_thread(query)

    try:
        with patched_environ(env):
            yield RelayTarget("sqlalchemy", preload, unpublished)
    finally:
        try:
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '15s'"))
                drop_outbox_table(connection, table_name)
        finally:
            engine.dispose()


@pytest.fixture
def redis_target(redis_url: str) -> Iterator[RelayTarget]:
    """A fresh hash-tagged key prefix on the test Redis."""
    prefix = f"{{e2e-{uuid.uuid4().hex}}}"
    env = {
        "SPAKKY_OUTBOX__STORAGE": "redis",
        "SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS": "0.05",
        "SPAKKY_OUTBOX_REDIS__URL": redis_url,
        "SPAKKY_OUTBOX_REDIS__KEY_PREFIX": prefix,
    }

    async def unpublished() -> tuple[int, int]:
        config = RedisOutboxConfig()
        connections = RedisOutboxConnectionManager(config)
        try:
            stats = await AsyncRedisOutboxStorage(
                connections, config, OutboxConfig()
            ).stats()
        finally:
            await connections.aclose()
        assert stats.claimed == stats.abandoned == 0, stats
        return stats.pending + stats.published, stats.pending

    try:
        with patched_environ(env):
            yield RelayTarget("redis", preload_redis_outbox, unpublished)
    finally:
        client = redis.Redis.from_url(redis_url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=5_000))
            for start in range(0, len(keys), 5_000):
                client.delete(*keys[start : start + 5_000])
        finally:
            client.close()


@pytest.fixture(params=["sqlalchemy", "redis"])
def relay_target(request: pytest.FixtureRequest) -> RelayTarget:
    """Each backend in turn; only the selected backend's service is resolved."""
    return request.getfixturevalue(f"{request.param}_target")


@pytest.fixture
async def sink_dir(tmp_path: Path) -> AsyncIterator[Path]:
    """Directory for the relays' sink files, removed afterwards."""
    directory = tmp_path / "sink"
    directory.mkdir()
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _wait_for_lines(
    directory: Path, workers: list[subprocess.Popen[bytes]], load: Load
) -> int:
    """Poll the sink files until every event, a dead relay or the deadline."""
    deadline = time.monotonic() + load.deadline_seconds
    while True:
        lines = count_sink_lines(directory)
        if (
            lines >= load.events
            or any(w.poll() is not None for w in workers)
            or time.monotonic() > deadline
        ):
            return lines
        await asyncio.sleep(POLL_SECONDS)


def _check_exactly_once_in_key_order(records: list[SinkRecord], load: Load) -> None:
    """Every (key, seq) once; per key, monotonic stamps order the seqs strictly."""
    pairs = [(key, seq) for key, seq, _ in records]
    assert len(pairs) == load.events, f"{len(pairs)} lines for {load.events} events"
    assert len(set(pairs)) == load.events, "duplicate deliveries"
    assert set(pairs) == load.expected()
    by_key: dict[str, list[tuple[int, int]]] = {}
    for key, seq, stamp in records:
        by_key.setdefault(key, []).append((stamp, seq))
    assert len(by_key) == load.keys
    for key, stamped in by_key.items():
        stamped.sort()
        for (before_ns, before), (after_ns, after) in pairwise(stamped):
            assert after_ns > before_ns, (
                f"key {key}: {before} and {after} stamped alike"
            )
            assert after > before, f"key {key}: {after} delivered after {before}"


async def test_multiprocess_relay_three_processes_to_file_sink_expect_exactly_once_and_per_key_order(
    relay_target: RelayTarget, tmp_path: Path, sink_dir: Path
) -> None:
    """Three relay processes drain a few thousand keyed events: once each, keys in order."""
    load = SINK_LOAD
    event_name = f"E2eLoad_{uuid.uuid4().hex}"
    stop_file = tmp_path / "stop"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        await relay_target.preload(event_name, load)
        workers = start_workers(
            relay_target.backend, stop_file, tmp_path, load, f"{SINK_MODE}{sink_dir}"
        )
        lines = await _wait_for_lines(sink_dir, workers, load)
        crashed = [w.args for w in workers if w.poll() is not None]
        assert not crashed, f"relay processes died: see {tmp_path}/relay-*.log"
        assert lines >= load.events, (
            f"only {lines} of {load.events} events within {load.deadline_seconds:.0f}s; "
            f"see {tmp_path}/relay-*.log"
        )
        await asyncio.to_thread(stop_workers, workers, stop_file)
        assert [w.returncode for w in workers] == [0] * LOAD_RELAYS, (
            f"relays did not stop cleanly: see {tmp_path}/relay-*.log"
        )

        per_file = read_sink_records(sink_dir)
        records = [record for rows in per_file.values() for record in rows]
        _check_exactly_once_in_key_order(records, load)
        assert await relay_target.unpublished() == (load.events, 0)
    finally:
        await asyncio.to_thread(stop_workers, workers, stop_file)
        stop_file.unlink(missing_ok=True)
