"""Administration on Redis: bounded requeue (never blocks the server), and where an outbox lives."""

import asyncio
from dataclasses import replace
from typing import Any, cast
from uuid import uuid4

import pytest
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.plugins.outbox_redis import scripts
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.storage import (
    AsyncRedisOutboxStorage,
    RedisOutboxStorage,
)
from spakky.plugins.outbox_redis.storage_base import LIST_CHUNK
from spakky_outbox_testservices.environ import scoped_environ, settings_of
from spakky_outbox_testservices.redis_servers import private_redis

from .conftest import RedisOutbox, drop_outbox, make_outbox, new_message, save_all

MAX_RETRY = 5
ABANDONED = 10_000
SLOW_MICROSECONDS = 50_000
"""No script may hold the server this long (SLOWLOG threshold of the private server)."""
PAYLOAD = b'{"blob": "PAYLOAD-MARK' + b"x" * 1000 + b'"}'



async def _abandon_all(outbox: RedisOutbox, messages: list[OutboxMessage]) -> None:
    """Save ``messages`` and abandon every one through the storage, as a relay would."""
    await save_all(outbox, messages)
    storage = outbox.storage()
    abandoned = 0
    while abandoned < len(messages):
        claimed = await storage.fetch_pending(100, MAX_RETRY)
        assert claimed, f"only {abandoned} of {len(messages)} could be claimed"
        await asyncio.gather(*(storage.abandon(m.id, "refused") for m in claimed))
        abandoned += len(claimed)


async def test_requeue_abandoned_ten_thousand_on_one_key_expect_no_slow_script() -> None:
    """Requeuing 10,000 abandoned messages of one key, a batch per call, never blocks Redis for 50 ms."""
    with private_redis("--slowlog-log-slower-than", str(SLOW_MICROSECONDS)) as server:
        outbox = make_outbox(server.url)
        try:
            sent = [new_message("hot") for _ in range(ABANDONED)]
            await _abandon_all(outbox, sent)
            storage = outbox.storage()
            assert (await storage.stats()).abandoned == ABANDONED
            client = server.client()
            try:
                client.slowlog_reset()
                counts: list[int] = []
                while not counts or counts[-1] == 1000:
                    counts.append(await storage.requeue_abandoned(limit=1000))
                slow = cast(list[dict[str, Any]], client.slowlog_get(128))
            finally:
                client.close()
            assert sum(counts) == ABANDONED
            assert [(e["duration"], e["command"][:60]) for e in slow] == []
            stats = await storage.stats()
            assert (stats.pending, stats.abandoned) == (ABANDONED, 0)
            # back in their original order, with a fresh budget
            claimed = await outbox.storage().fetch_pending(100, MAX_RETRY)
            assert [m.id for m in claimed] == [m.id for m in sent[:10]]
            assert {m.retry_count for m in claimed} == {0}
        finally:
            await drop_outbox(outbox)


async def test_requeue_abandoned_limit_and_ids_expect_bounded_and_oldest_first(
    outbox: RedisOutbox,
) -> None:
    """``limit`` caps one call; None takes the oldest; named ids requeue only those."""
    sent = [new_message("k" if i % 2 else None) for i in range(7)]
    await _abandon_all(outbox, sent)
    storage = outbox.storage()
    assert await storage.requeue_abandoned([sent[6].id, uuid4()], limit=5) == 1
    assert await storage.requeue_abandoned(limit=3) == 3
    listed = await storage.list_abandoned()
    assert [m.id for m in listed] == [m.id for m in sent[3:6]]
    assert await storage.requeue_abandoned(limit=0) == 0
    assert await storage.requeue_abandoned(limit=10) == 3
    assert (await storage.stats()).abandoned == 0


async def test_list_abandoned_across_chunks_expect_oldest_first_without_payloads() -> None:
    """A listing over several chunks returns the right rows in save order; no chunk carries a payload or headers."""
    with private_redis("--slowlog-log-slower-than", "0", "--slowlog-max-len", "10000") as server:
        outbox = make_outbox(server.url)
        try:
            sent = [
                replace(new_message("k" if i % 3 else None), payload=PAYLOAD, headers={"h": "HEADER-MARK"})
                for i in range(LIST_CHUNK * 2 + 100)
            ]
            await _abandon_all(outbox, sent)
            storage = outbox.storage()
            # the first call also loads the script (a NOSCRIPT EVALSHA the log would count)
            assert [m.id for m in await storage.list_abandoned(limit=1)] == [sent[0].id]
            client = server.client()
            try:
                client.slowlog_reset()
                listed = await storage.list_abandoned(limit=LIST_CHUNK * 2 + 50)
                calls = cast(list[dict[str, Any]], client.slowlog_get(10_000))
            finally:
                client.close()
            assert [m.id for m in listed] == [m.id for m in sent[: LIST_CHUNK * 2 + 50]]
            assert {(m.payload, tuple(m.headers)) for m in listed} == {(b"", ())}
            assert [(m.last_error, m.partition_key) for m in listed[:3]] == [
                ("refused", None), ("refused", "k"), ("refused", "k")
            ]
            # one short script per chunk, each asking for at most a chunk
            assert sorted(int(e["command"].split()[-1]) for e in calls if e["command"].startswith(b"EVALSHA")) == [
                50, LIST_CHUNK, LIST_CHUNK
            ]
            everything = await storage.list_abandoned(limit=len(sent) * 2)
            assert [m.id for m in everything] == [m.id for m in sent]
            # the raw reply of a full chunk holds neither payload nor header bytes
            script = outbox.raw.register_script(scripts.LIST_ABANDONED)
            reply = cast(bytes, await script(keys=[outbox.keys.pending], args=[outbox.prefix, 0, LIST_CHUNK]))
            assert reply.count(str(sent[0].id).encode()) == 1
            assert b"PAYLOAD-MARK" not in reply and b"HEADER-MARK" not in reply
        finally:
            await drop_outbox(outbox)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:S3cretPw@host:6380/2", "redis://user@host:6380/2"),
        ("rediss://host/0?password=S3cretPw&ssl_cert_reqs=none", "rediss://host/0?ssl_cert_reqs=none"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        # malformed: an unencoded "/" in the password, a missing ":" after the scheme
        ("redis://:S3c/retPw@127.0.0.1:1/0", "redis://***@127.0.0.1:1/0"),
        ("rediss//:S3cretPw@x", "rediss//***@x"),
    ],
)
def test_target_url_expect_no_password_even_malformed(
    monkeypatch: pytest.MonkeyPatch, url: str, shown: str
) -> None:
    """The target line never holds the password, however the URL is written."""
    monkeypatch.setenv("SPAKKY_OUTBOX_REDIS__URL", url)
    config = RedisOutboxConfig()
    storage = RedisOutboxStorage(RedisOutboxConnectionManager(config), config, OutboxConfig())
    location = storage.target().location
    assert location == f"{shown} key prefix {{spakky-outbox}}"
    assert "S3c" not in location


def test_target_defaults_expect_location_and_defaulted_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Left at its defaults, the target names the default location and both settings."""
    for name in ("URL", "KEY_PREFIX", "CLUSTER"):
        monkeypatch.delenv(f"SPAKKY_OUTBOX_REDIS__{name}", raising=False)
    config = RedisOutboxConfig()
    storage = RedisOutboxStorage(RedisOutboxConnectionManager(config), config, OutboxConfig())
    target = storage.target()
    assert (target.backend, target.location) == (
        "redis",
        "redis://127.0.0.1:6379/0 key prefix {spakky-outbox}",
    )
    assert target.defaulted == ("SPAKKY_OUTBOX_REDIS__URL", "SPAKKY_OUTBOX_REDIS__KEY_PREFIX")


def test_target_configured_expect_no_password_nothing_defaulted() -> None:
    """Set by the environment, the target shows the URL without its password and the prefix."""
    values = {"URL": "redis://app:s3cret@cache:6380/3", "KEY_PREFIX": "{shop}", "CLUSTER": "true"}
    with scoped_environ(settings_of("SPAKKY_OUTBOX_REDIS", values)):
        config = RedisOutboxConfig()
    storage = AsyncRedisOutboxStorage(RedisOutboxConnectionManager(config), config, OutboxConfig())
    target = storage.target()
    assert target.location == "redis://app@cache:6380/3 key prefix {shop} (cluster)"
    assert "s3cret" not in repr(target)
    assert target.defaulted == ()
