"""Say who held Redis when a test failed on a Redis timeout: its SLOWLOG right after the failure.

A read timeout (``Timeout reading from host:port``) means the server sent no
reply for the client's whole socket timeout. Our commands are short scripts,
so the usual cause is someone else's long command on a shared server (a
script, a listing run by hand); Redis logs each such command in its SLOWLOG,
which is read at once, before later entries push it out.
"""

import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis

TIMEOUT_TEXT = "Timeout reading from"
"""What redis-py's read timeouts say (sync and asyncio clients)."""
HELD_MICROSECONDS = 1_000_000
"""Commands at least this long are reported (SLOWLOG durations are in microseconds)."""
LOOKBACK_SECONDS = 300
"""How far back the SLOWLOG is read."""


def held_commands(entries: Iterable[Mapping[str, Any]], now: float) -> list[str]:
    """The SLOWLOG entries that held the server a second or more in the last `LOOKBACK_SECONDS`, described."""
    found: list[str] = []
    for entry in entries:
        duration, started = int(entry["duration"]), int(entry["start_time"])
        if duration < HELD_MICROSECONDS or started < now - LOOKBACK_SECONDS:
            continue
        command = entry["command"]
        text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
        text = " ".join(text.split())  # a script's lines on one line
        stamp = time.strftime("%H:%M:%S", time.gmtime(started))
        found.append(f"{duration / 1000:,.0f} ms from {stamp} UTC: {text[:160]}")
    return found


def describe_held(url: str) -> str:
    """What held the Redis at ``url`` a second or more lately, from its SLOWLOG; a line saying so when nothing did."""
    try:
        with redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5) as client:
            entries = cast(list[dict[str, Any]], client.slowlog_get(128))
    except redis.RedisError as error:
        return f"SLOWLOG of {url} could not be read: {error}"
    held = held_commands(entries, time.time())
    if not held:
        return (
            f"no command held {url} for a second or more in the last {LOOKBACK_SECONDS} s (SLOWLOG): "
            "the client's process or event loop was stalled, the network cut, or another server timed out"
        )
    return "\n".join([f"commands that held {url} (SLOWLOG):", *held])
