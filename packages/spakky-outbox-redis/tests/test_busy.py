"""A Redis busy with another client's long script: the core's unavailable error saying so, other replies untouched."""

import contextlib
import io
import threading
from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import ResponseError
from spakky.outbox.cli.main import main
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.outbox.testing.waiting import wait_for
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.storage_base import is_busy, storage_errors
from spakky_outbox_testservices.environ import scoped_environ
from spakky_outbox_testservices.redis_servers import RedisServer, private_redis

from .conftest import RedisOutbox, make_outbox

PLUGINS = "spakky-data,spakky-domain,spakky-event,spakky-tracing,spakky-outbox,spakky-outbox-redis"
BUSY_AFTER_MS = "50"
"""The private server's ``lua-time-limit`` (``busy-reply-threshold`` from Redis 7): BUSY after 50 ms of a script."""
HOLD_US = 60_000_000
"""How long the script would hold the server by itself; the test ends it with SCRIPT KILL once done."""
HOLD_SCRIPT = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1])
return 1
"""
"""Holds the server until its own clock has moved ARGV[1] microseconds (read-only, so SCRIPT KILL ends it)."""
BUSY_WORDS = "Redis is running a long script from another client"


def _answers_busy(client: redis.Redis) -> bool:
    try:
        client.ping()
    except ResponseError as error:
        return str(error).startswith("BUSY ")
    return False


def _hold(server: RedisServer, ended: list[BaseException]) -> None:
    # its own client, patient past the test: only SCRIPT KILL (or the cap) ends the reply
    with redis.Redis(port=server.port, socket_timeout=HOLD_US / 1_000_000 + 10) as holder:
        try:
            holder.eval(HOLD_SCRIPT, 0, HOLD_US)
        except ResponseError as error:  # killed: the expected end
            ended.append(error)


@pytest.fixture
def busy() -> Iterator[RedisServer]:
    """A private server busy with another client's script until the test is done.

    The script ends by itself after `HOLD_US`, but the test ends it with
    SCRIPT KILL as soon as it is done, so a slow machine never sees it end early.
    """
    with private_redis("--lua-time-limit", BUSY_AFTER_MS) as server, server.client() as control:
        ended: list[BaseException] = []
        thread = threading.Thread(target=_hold, args=(server, ended), daemon=True)
        thread.start()
        try:
            wait_for(lambda: _answers_busy(control), timeout=30)
            yield server
        finally:
            with contextlib.suppress(ResponseError):  # NOTBUSY: it ended already
                control.execute_command("SCRIPT", "KILL")
            thread.join(30)
        assert not thread.is_alive() and ended, "the holding script did not end by SCRIPT KILL"


async def test_storage_redis_busy_with_script_expect_unavailable_saying_so(busy: RedisServer) -> None:
    """A storage call on a Redis busy with another client's script raises the unavailable error naming it (both flavours)."""
    outbox = make_outbox(busy.url)
    try:
        with pytest.raises(OutboxStorageUnavailableError, match=BUSY_WORDS) as caught:
            await outbox.storage().stats()
        assert "SCRIPT KILL" in str(caught.value) and "SLOWLOG" in str(caught.value), caught.value
        with pytest.raises(OutboxStorageUnavailableError, match=BUSY_WORDS):
            outbox.sync_storage().fetch_pending(10, 5)
        with pytest.raises(OutboxStorageUnavailableError, match=BUSY_WORDS):
            await outbox.storage().wait_for_messages(0)
    finally:
        await outbox.connections.aclose()
        outbox.connections.close()
        await outbox.raw.aclose()


def test_cli_status_redis_busy_with_script_expect_one_line_exit_2(busy: RedisServer) -> None:
    """``status`` against a Redis busy with another client's script prints one line naming it and exits 2."""
    err, out = io.StringIO(), io.StringIO()
    settings = {
        "SPAKKY_OUTBOX__STORAGE": "redis",
        "SPAKKY_OUTBOX_REDIS__URL": busy.url,
        "SPAKKY_OUTBOX_REDIS__KEY_PREFIX": "{busy}",
    }
    with scoped_environ(settings), contextlib.redirect_stderr(err):
        status = main(["--include", PLUGINS, "status"], out=out)
    assert status == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and BUSY_WORDS in lines[0] and "Traceback" not in lines[0], lines


async def test_storage_script_fails_on_wrong_type_expect_response_error_not_unavailable(outbox: RedisOutbox) -> None:
    """A script error of our own (WRONGTYPE on a damaged key) stays a ResponseError: a bug to report, not an outage."""
    await outbox.raw.set(outbox.keys.pending, "not a sorted set")
    with pytest.raises(ResponseError, match="WRONGTYPE") as caught:
        await outbox.storage().stats()
    assert not isinstance(caught.value, OutboxStorageUnavailableError)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        outbox.sync_storage().stats()


def test_storage_errors_busykey_reply_expect_not_converted(redis_url: str) -> None:
    """BUSYKEY (RESTORE onto an existing key) shares BUSY's first letters but is the command's error: left as it is."""
    key = "{unit-busy}:restored"
    with redis.Redis.from_url(redis_url) as client:
        client.set(key, "value")
        try:
            dumped = client.dump(key)
            with pytest.raises(ResponseError, match="BUSYKEY") as caught, storage_errors(RedisOutboxConfig()):
                client.restore(key, 0, dumped)
        finally:
            client.delete(key)
    assert not is_busy(caught.value)
