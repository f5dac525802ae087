"""How long the Redis outbox waits for Redis: our setting on every client, and an error naming it when it runs out."""

import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
import redis
import redis.asyncio
from spakky.outbox.cli.main import main
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import (
    SOCKET_TIMEOUT_VARIABLE,
    RedisOutboxConfig,
)
from spakky.plugins.outbox_redis.storage_base import wake_up_slices
from spakky_outbox_testservices.environ import scoped_environ
from spakky_outbox_testservices.redis_held import describe_held, held_commands
from spakky_outbox_testservices.redis_servers import RedisServer, private_redis

from .conftest import RedisOutbox, drop_outbox, make_outbox

PLUGINS = "spakky-data,spakky-domain,spakky-event,spakky-tracing,spakky-outbox,spakky-outbox-redis"
HELD_MS = 120_000
"""How long a test holds its private server at most (it lets it go as soon as the command returned)."""


def _kwargs(client: redis.Redis | redis.asyncio.Redis) -> dict[str, Any]:
    return cast(dict[str, Any], client.connection_pool.connection_kwargs)


async def test_clients_socket_timeout_setting_expect_on_both_clients() -> None:
    """SOCKET_TIMEOUT_SECONDS bounds connecting and every reply, on the sync and the asyncio client."""
    with scoped_environ({SOCKET_TIMEOUT_VARIABLE: "7.5"}):
        manager = RedisOutboxConnectionManager(RedisOutboxConfig())
    try:
        for client in (manager.client, manager.async_client):
            kwargs = _kwargs(cast(redis.Redis | redis.asyncio.Redis, client))
            assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (7.5, 7.5)
    finally:
        await manager.aclose()


def test_config_socket_timeout_default_expect_five_seconds_whatever_redis_py_says() -> None:
    """The default is ours (5 s), not the installed redis-py's (none before redis-py 8.0)."""
    assert RedisOutboxConfig().socket_timeout_seconds == 5.0


@pytest.fixture
def held() -> Iterator[RedisServer]:
    """A private server whose scripts (every command of ours) wait until the test lets it go.

    ``CLIENT PAUSE ... WRITE`` holds every EVAL/EVALSHA, as a long script of
    someone else holds a shared server; it is never done to the shared one.
    """
    with private_redis() as server, server.client() as control:
        control.execute_command("CLIENT", "PAUSE", HELD_MS, "WRITE")
        try:
            yield server
        finally:
            control.execute_command("CLIENT", "UNPAUSE")


def test_cli_status_redis_held_past_timeout_expect_error_naming_setting(held: RedisServer) -> None:
    """``status`` against a Redis held longer than SOCKET_TIMEOUT_SECONDS exits 2 naming the setting and its value."""
    err, out = io.StringIO(), io.StringIO()
    settings = {
        "SPAKKY_OUTBOX__STORAGE": "redis",
        "SPAKKY_OUTBOX_REDIS__URL": held.url,
        "SPAKKY_OUTBOX_REDIS__KEY_PREFIX": "{held}",
        SOCKET_TIMEOUT_VARIABLE: "0.5",
    }
    with scoped_environ(settings), contextlib.redirect_stderr(err):
        status = main(["--include", PLUGINS, "status"], out=out)
    assert status == 2
    line = err.getvalue()
    assert "Timeout reading from" in line and f"{SOCKET_TIMEOUT_VARIABLE}=0.5 s" in line, line


async def test_storage_redis_held_past_timeout_expect_unavailable_naming_setting(held: RedisServer) -> None:
    """A storage call on a held Redis raises the core's unavailable error naming the setting (both flavours)."""
    outbox = make_outbox(held.url)
    outbox.config = outbox.config.model_copy(update={"socket_timeout_seconds": 0.5})
    outbox.connections = RedisOutboxConnectionManager(outbox.config)
    try:
        with pytest.raises(OutboxStorageUnavailableError, match=f"{SOCKET_TIMEOUT_VARIABLE}=0.5 s"):
            await outbox.storage().stats()
        with pytest.raises(OutboxStorageUnavailableError, match=f"{SOCKET_TIMEOUT_VARIABLE}=0.5 s"):
            outbox.sync_storage().stats()
    finally:
        await outbox.connections.aclose()
        outbox.connections.close()
        await outbox.raw.aclose()


@pytest.fixture
async def quick(redis_url: str) -> AsyncIterator[RedisOutbox]:
    """An outbox whose clients wait at most 2 s for a reply (its wake-up slices: 1 s, a second of margin)."""
    outbox = make_outbox(redis_url)
    outbox.config = outbox.config.model_copy(update={"socket_timeout_seconds": 2.0})
    outbox.connections = RedisOutboxConnectionManager(outbox.config)
    try:
        yield outbox
    finally:
        await drop_outbox(outbox)


async def test_wait_for_messages_longer_than_socket_timeout_expect_quiet_false(quick: RedisOutbox) -> None:
    """A wake-up wait longer than the socket timeout ends quietly with False (one BZPOPMIN that long would time out)."""
    assert await quick.storage().wait_for_messages(2.5) is False
    assert quick.sync_storage().wait_for_messages(2.5) is False


def test_wake_up_slices_expect_sum_and_each_within_half_socket_timeout() -> None:
    """The slices add up to the wait, none longer than half the socket timeout, none rounded to 0 ms (block forever)."""
    assert list(wake_up_slices(12.3, 5.0)) == [2.5, 2.5, 2.5, 2.5, 2.3]
    assert list(wake_up_slices(1.0, 5.0)) == [1.0]
    assert list(wake_up_slices(0.0004, 5.0)) == [0.01]


HOLD_SCRIPT = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1])
return 1
"""
"""Holds the server until its own clock has moved ARGV[1] microseconds (a long script of someone else)."""


def test_describe_held_after_long_script_expect_script_named() -> None:
    """After a script held a private server for over a second, the failure section names it from the SLOWLOG."""
    with private_redis() as server, server.client() as client:
        assert "no command held" in describe_held(server.url)
        client.eval(HOLD_SCRIPT, 0, 1_100_000)
        described = describe_held(server.url)
    assert described.startswith(f"commands that held {server.url} (SLOWLOG):"), described
    assert "ms from" in described and "repeat t = redis.call('TIME')" in described, described


def test_held_commands_expect_only_long_and_recent_entries() -> None:
    """Entries under a second, or older than the look-back, are left out; the rest say how long and what."""
    now = 1_800_000_000.0
    entries = [
        {"duration": 13_168_000, "start_time": int(now) - 10, "command": b"EVALSHA abc 1 {p}:_outbox:pending"},
        {"duration": 75_000, "start_time": int(now) - 5, "command": b"EVALSHA fetch"},
        {"duration": 9_000_000, "start_time": int(now) - 3600, "command": b"DEBUG SLEEP 9"},
    ]
    assert held_commands(entries, now) == ["13,168 ms from 07:59:50 UTC: EVALSHA abc 1 {p}:_outbox:pending"]
