"""What the Redis inboxes of both flavours share: key names, Lua scripts, arguments, replies.

Every inbox key lives under the outbox's own segment ``O = <prefix>:_outbox``,
so it shares the outbox's hash tag and slot with the outbox and the business
keys of `RedisKeys.business`: one MULTI/EXEC can write them all, also on a
Redis Cluster (whose transactions stay in one slot).

- ``O:inbox:r:<member>``  STRING, one record; ``<member>`` is
  ``<len(consumer)>:<consumer>:<message id>`` (unambiguous whatever either
  holds). A done record holds its time ``<recorded ms>``; a leased one
  ``<recorded ms> <lease until ms> <token>``. Every record expires on its own
  (``PX``) after the dedup window: no sweep is needed for the records.
- ``O:inbox:recorded``  ZSET (score = recorded ms): every record, for
  ``purge`` and ``stats``. Each write trims a few entries older than the
  window (whose records have expired), so the index never outgrows the
  window either.
- ``O:inbox:leased``  ZSET (score = recorded ms): records whose handler has
  not finished (lease mode), for ``stats``.

Times come from Redis ``TIME``, as the outbox's claims do; the scripts use the
commands the outbox's do (``ZRANGEBYSCORE``), so any Redis the outbox runs on serves the inbox.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from spakky.outbox.common.config import redact_url
from spakky.outbox.inbox.config import InboxConfig
from spakky.outbox.inbox.identity import inbox_key
from spakky.outbox.ports.inbox import InboxLease, InboxStats, LeaseOutcome
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.codec import RedisKeys, RedisValue
from spakky.plugins.outbox_redis.config import RedisOutboxConfig, check_key_prefix

TRIM = 2
"""Index entries older than the window each write removes: more than it adds, so the index shrinks to the window."""
PURGE_CHUNK = 1000
"""Most records one purge script deletes (a few ms of server time)."""


@dataclass(frozen=True)
class InboxKeys:
    """Names of the inbox keys of one outbox prefix."""

    prefix: str

    @property
    def records(self) -> str:
        """Common start of every record key (followed by the record's member)."""
        return f"{RedisKeys(self.prefix).outbox}:inbox:r:"

    @property
    def recorded(self) -> str:
        """ZSET of every record by recorded time (ms)."""
        return f"{RedisKeys(self.prefix).outbox}:inbox:recorded"

    @property
    def leased(self) -> str:
        """ZSET of the leased records by recorded time (ms)."""
        return f"{RedisKeys(self.prefix).outbox}:inbox:leased"

    @staticmethod
    def member(consumer: str, message_id: str) -> str:
        """The record's name in the index sets (and the end of its key).

        Raises:
            InvalidInboxKeyError: A part is empty or too long.
        """
        consumer, message_id = inbox_key(consumer, message_id)
        return f"{len(consumer)}:{consumer}:{message_id}"

    @staticmethod
    def split(member: str) -> tuple[str, str]:
        """The (consumer, message id) of a member."""
        length, rest = member.split(":", 1)
        size = int(length)
        return rest[:size], rest[size + 1 :]

    def record(self, consumer: str, message_id: str) -> str:
        """The key of one record."""
        return self.records + self.member(consumer, message_id)


_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function drop(records, member)
  redis.call('DEL', records .. member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[3], member)
end
-- remove up to n records written before cutoff (ms) and their index entries
local function trim(records, cutoff, n)
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. cutoff, 'LIMIT', 0, n)
  for _, member in ipairs(old) do drop(records, member) end
  return #old
end
local function lease_of(value)
  local _, until_ms, token = string.match(value, '^(%d+) (%d+) (%x+)$')
  return until_ms and tonumber(until_ms), token
end
-- whether the record KEYS[1] is leased by token
local function held_by(token)
  local value = redis.call('GET', KEYS[1])
  if not value then return false end
  local _, holder = lease_of(value)
  return holder == token
end
"""
"""KEYS: a record key (or the index, for scripts about many), the recorded and leased sets."""

RECORD = (
    _COMMON
    + """
-- ARGV: member, window ms, records prefix, trim
local now = now_ms()
redis.call('SET', KEYS[1], now, 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
trim(ARGV[3], now - tonumber(ARGV[2]), tonumber(ARGV[4]))
return 1
"""
)
"""Write a done record: queued in the transaction's MULTI, after WATCH found no record."""

ACQUIRE = (
    _COMMON
    + """
-- ARGV: member, window ms, lease ms, token, records prefix, trim
local now = now_ms()
local value = redis.call('GET', KEYS[1])
if value then
  local until_ms = lease_of(value)
  if not until_ms then return 'done' end
  if until_ms > now then return 'busy' end
end
local lease = tonumber(ARGV[3])
redis.call('SET', KEYS[1], now .. ' ' .. (now + lease) .. ' ' .. ARGV[4], 'PX', math.max(tonumber(ARGV[2]), lease))
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
trim(ARGV[5], now - tonumber(ARGV[2]), tonumber(ARGV[6]))
return 'acquired'
"""
)
"""Lease a new record or take over a lapsed lease; else say ``done`` or ``busy``."""

FINISH = (
    _COMMON
    + """
-- ARGV: member, window ms, token
if not held_by(ARGV[3]) then return 0 end
local now = now_ms()
redis.call('SET', KEYS[1], now, 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""
)
"""Mark a leased record done when the token still holds it; its window starts now."""

RELEASE = (
    _COMMON
    + """
-- ARGV: member, records prefix, token
if not held_by(ARGV[3]) then return 0 end
drop(ARGV[2], ARGV[1])
return 1
"""
)
"""Delete a leased record when the token still holds it."""

PURGE = (
    _COMMON
    + """
-- ARGV: cutoff ms, limit, records prefix
return trim(ARGV[3], tonumber(ARGV[1]), tonumber(ARGV[2]))
"""
)
"""Delete up to ``limit`` records written before the cutoff, oldest first."""

STATS = """
-- ARGV: window ms; entries older than the window are expired records not trimmed yet
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
local oldest = redis.call('ZRANGEBYSCORE', KEYS[2], cutoff, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {redis.call('ZCOUNT', KEYS[2], cutoff, '+inf'), redis.call('ZCOUNT', KEYS[3], cutoff, '+inf'), oldest[2] or false}
"""
"""Count the records and leased ones within the window; the oldest one's time (ms)."""

SCRIPTS: dict[str, str] = {
    "acquire": ACQUIRE,
    "finish": FINISH,
    "release": RELEASE,
    "purge": PURGE,
    "stats": STATS,
}
"""The scripts run on their own (outside a transaction), by name."""

type ScriptCall = tuple[str, list[str], list[RedisValue]]
"""A script's name, KEYS and ARGV."""


class RedisInboxBase:
    """Settings, script arguments and reply decoding shared by the sync and asyncio inboxes."""

    _connections: RedisOutboxConnectionManager
    _config: RedisOutboxConfig
    _keys: InboxKeys
    _window_ms: int

    def __init__(
        self,
        connections: RedisOutboxConnectionManager,
        config: RedisOutboxConfig,
        inbox_config: InboxConfig,
    ) -> None:
        self._connections = connections
        self._config = config
        self._keys = InboxKeys(check_key_prefix(config.key_prefix))
        self._window_ms = max(1, round(inbox_config.window_seconds * 1000))

    def _record_command(self, consumer: str, message_id: str) -> tuple[str, list[RedisValue]]:
        """The record's key, and the ``EVAL`` arguments (after the command name) that write it done."""
        keys = self._keys
        member = keys.member(consumer, message_id)
        key = keys.records + member
        return key, [RECORD, 3, key, keys.recorded, keys.leased, member, self._window_ms, keys.records, TRIM]

    def _on(self, consumer: str, message_id: str, name: str, args: list[RedisValue]) -> ScriptCall:
        keys = self._keys
        member = keys.member(consumer, message_id)
        return (name, [keys.records + member, keys.recorded, keys.leased], [member, *args])

    def _acquire(self, consumer: str, message_id: str, lease_seconds: float, token: str) -> ScriptCall:
        lease_ms = max(1, round(lease_seconds * 1000))
        return self._on(consumer, message_id, "acquire", [self._window_ms, lease_ms, token, self._keys.records, TRIM])

    def _finish(self, consumer: str, message_id: str, token: str) -> ScriptCall:
        return self._on(consumer, message_id, "finish", [self._window_ms, token])

    def _release(self, consumer: str, message_id: str, token: str) -> ScriptCall:
        return self._on(consumer, message_id, "release", [self._keys.records, token])

    def _index(self, name: str, args: list[RedisValue]) -> ScriptCall:
        keys = self._keys
        return (name, [keys.recorded, keys.recorded, keys.leased], args)

    def _purge_steps(self, before: datetime, limit: int) -> list[ScriptCall]:
        """Script calls of at most `PURGE_CHUNK` records each, up to ``limit`` in all."""
        cutoff = round(before.timestamp() * 1000)
        sizes = [min(PURGE_CHUNK, limit - start) for start in range(0, max(0, limit), PURGE_CHUNK)]
        return [self._index("purge", [cutoff, size, self._keys.records]) for size in sizes]

    def _stats_call(self) -> ScriptCall:
        return self._index("stats", [self._window_ms])

    @staticmethod
    def _lease(reply: Any, token: str) -> InboxLease:
        outcome = LeaseOutcome(cast(bytes, reply).decode())
        return InboxLease(outcome, token if outcome is LeaseOutcome.ACQUIRED else None)

    @staticmethod
    def _stats(reply: Any) -> InboxStats:
        records, leased, oldest = cast(list[Any], reply)
        return InboxStats(
            records=int(records),
            leased=int(leased),
            oldest_recorded_at=None if oldest is None else datetime.fromtimestamp(float(oldest) / 1000, UTC),
        )

    def location(self) -> str:
        """The Redis URL without password and the key prefix (and whether it is a cluster)."""
        location = f"{redact_url(self._config.url)} key prefix {self._keys.prefix}"
        return f"{location} (cluster)" if self._config.cluster else location
