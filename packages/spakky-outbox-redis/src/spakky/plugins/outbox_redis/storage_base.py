"""What the Redis outbox storages of both flavours share: settings, script arguments, reply decoding."""


import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from spakky.outbox.backend.claims import key_run, undecodable_reason
from spakky.outbox.common.config import OutboxConfig, redact_url
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import (
    KEY_HEADS_WINDOW,
    RELAY_CLAIMS_WINDOW,
    KeyHead,
    MessageDetail,
    OutboxStats,
    OutboxTarget,
    RelayClaims,
    relay_claims_of,
)
from spakky.outbox.error import (
    OutboxStorageUnavailableError,
    OutboxTransactionRequiredError,
)
from spakky.plugins.outbox_redis import scripts
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.codec import (
    LISTED_FIELDS,
    MESSAGE_FIELDS,
    RedisKeys,
    RedisValue,
    age_seconds,
    save_arguments,
    to_listed,
    to_message,
    unframe,
)
from spakky.plugins.outbox_redis.config import (
    KEY_PREFIX_VARIABLE,
    SOCKET_TIMEOUT_VARIABLE,
    SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX,
    STORAGE_NAME,
    RedisOutboxConfig,
    check_key_prefix,
)
from spakky.plugins.outbox_redis.error import RedisTransactionNotActiveError

STORAGE_BACKEND = STORAGE_NAME
"""Backend name in `OutboxTarget`: the storage's name."""

UNAVAILABLE = (
    RedisConnectionError,  # includes BusyLoadingError: a restarted server loading its data
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    ReadOnlyError,  # a replica promoted a moment ago, or a primary demoted
)
"""Redis errors that mean the server (or the slot's node) cannot serve now."""


def is_busy(error: BaseException) -> bool:
    """Whether ``error`` is Redis's BUSY reply: another client's script runs past ``busy-reply-threshold``.

    redis-py has no class for it (its `BusyLoadingError` is the LOADING
    reply), so it is a plain `ResponseError` told by its code; BUSYKEY and
    BUSYGROUP are other codes, real errors of the command.
    """
    return isinstance(error, ResponseError) and str(error).startswith("BUSY ")


def unavailable(error: Exception, config: RedisOutboxConfig) -> OutboxStorageUnavailableError:
    """The core's unavailable error for ``error`` (of `UNAVAILABLE`, or BUSY); a timeout names the setting that bounds it."""
    if isinstance(error, RedisTimeoutError):
        return OutboxStorageUnavailableError(
            f"{error}: no reply within {SOCKET_TIMEOUT_VARIABLE}={config.socket_timeout_seconds:g} s; "
            "Redis was held by a long command (see its SLOWLOG) or this process was stalled"
        )
    if is_busy(error):
        return OutboxStorageUnavailableError(
            "Redis is running a long script from another client (past its busy-reply-threshold) "
            "and answers no other command until it ends: find it in SLOWLOG once it ended, or stop "
            f"it with SCRIPT KILL (FUNCTION KILL for a function) if it wrote nothing. Redis said: {error}"
        )
    return OutboxStorageUnavailableError(str(error))


@contextmanager
def storage_errors(config: RedisOutboxConfig, *also: type[Exception]) -> Generator[None]:
    """Raise what means Redis cannot serve now (`UNAVAILABLE`, a BUSY reply, ``also``) as the core's unavailable error.

    A plain context manager, so both flavours share it: the async one wraps
    its awaits in it. Any other `ResponseError` (a failing script, a wrong
    command) goes through as it is: it is a bug to report, not an outage.
    """
    try:
        yield
    except (*UNAVAILABLE, *also) as error:
        raise unavailable(error, config) from error
    except ResponseError as error:
        if not is_busy(error):
            raise
        raise unavailable(error, config) from error


def wake_up_slices(timeout: float, socket_timeout: float) -> Iterator[float]:
    """BZPOPMIN timeouts adding up to ``timeout``, each at most half of ``socket_timeout``.

    The server answers a BZPOPMIN only when its own timeout ends, so a longer
    one would outlast the client's socket timeout and fail as a timeout. Each
    is a whole number of milliseconds, at least `MIN_WAKE_UP_SLICE_MS`: a
    timeout Redis rounds down to 0 ms would block forever.
    """
    step_ms = max(MIN_WAKE_UP_SLICE_MS, int(socket_timeout * 500))
    remaining_ms = max(MIN_WAKE_UP_SLICE_MS, round(timeout * 1000))
    while remaining_ms > 0:
        slice_ms = max(MIN_WAKE_UP_SLICE_MS, min(remaining_ms, step_ms))
        yield slice_ms / 1000
        remaining_ms -= slice_ms


MIN_WAKE_UP_SLICE_MS = 10
"""Shortest BZPOPMIN of a wake-up wait, in milliseconds."""

SCRIPTS: dict[str, str] = {
    "fetch": scripts.FETCH,
    "settle": scripts.SETTLE,
    "renew": scripts.RENEW,
    "requeue": scripts.REQUEUE,
    "purge": scripts.PURGE,
    "stats": scripts.STATS,
    "abandoned": scripts.LIST_ABANDONED,
    "key_heads": scripts.KEY_HEADS,
    "get_message": scripts.GET_MESSAGE,
    "relay_claims": scripts.RELAY_CLAIMS,
    "write_figures": scripts.WRITE_FIGURES,
    "read_figures": scripts.READ_FIGURES,
}

WIDTH = 1 + len(MESSAGE_FIELDS)
"""Framed items per message: its id, then its fields."""
LISTED_WIDTH = 1 + len(LISTED_FIELDS)
"""Framed items per listed message: its id, then its listed fields."""


@dataclass
class AbandonedListing:
    """A listing of abandoned messages read chunk by chunk, oldest first (each chunk one short script)."""

    prefix: str
    limit: int
    messages: list[OutboxMessage] = field(default_factory=list[OutboxMessage])
    after: bytes = b"0"
    """Position (seq) of the last message read: the next chunk starts after it."""
    read: int = 0
    done: bool = False

    def __post_init__(self) -> None:
        self.done = self.limit <= 0

    def next_args(self) -> list[RedisValue]:
        """ARGV of the next chunk's script."""
        return [self.prefix, self.after, min(LIST_CHUNK, self.limit - self.read)]

    def add(self, reply: Any) -> None:
        """Take in one chunk; a record without its name or creation time is left out."""
        items = unframe(cast(bytes, reply))
        self.after = cast(bytes, items[1])
        count = (len(items) - 2) // LISTED_WIDTH
        for start in range(2, len(items), LISTED_WIDTH):
            try:
                message = to_listed(cast(bytes, items[start]), items[start + 1 : start + LISTED_WIDTH])
            except Exception:  # any damage: the record is left out, the listing goes on
                continue
            self.messages.append(message)
        self.read += count
        self.done = self.read >= self.limit or count < LIST_CHUNK


class Settle:
    """Modes of the settle script."""

    PUBLISH = "publish"
    ABANDON = "abandon"
    INCREMENT = "increment"
    RETRY = "retry"
    RELEASE = "release"


_REQUEUE_CHUNK = 200
"""Most abandoned messages one requeue script moves (a few ms of server time)."""
_PURGE_CHUNK = 1000
"""Most published messages one purge script deletes (a few ms of server time)."""
LIST_CHUNK = 200
"""Most abandoned messages one listing script reads (a few ms of server time, as a requeue step)."""

type Step = tuple[list[RedisValue], int | None]
"""One administration script call: its ARGV, and the count below which the oldest-first walk is over
(None: the call works on named ids, and the next chunk follows regardless)."""


def _steps(limit: int, chunk: int) -> Iterator[int]:
    """Split ``limit`` into script-sized steps: a call of any size holds the server milliseconds at a time."""
    while limit > 0:
        yield min(chunk, limit)
        limit -= chunk


def _from_ms(value: bytes | None) -> datetime | None:
    """A time the scripts give in ms since the epoch (Redis ``TIME``)."""
    return None if value is None else datetime.fromtimestamp(float(value) / 1000, tz=UTC)


CLAIMED_TEXTS_MAX = 20_000
"""Most claimed ids a storage keeps the stored text of (see `RedisOutboxStorageBase._ids_text`);
past it the texts are dropped and ids are written out again, as before a claim."""


class RedisOutboxStorageBase:
    """State, arguments and reply decoding shared by the sync and asyncio storages."""

    _keys: RedisKeys
    _owner: str
    _claim_timeout_ms: int
    _lease_ms: int
    _sweep: int
    _max_bytes: int
    _config: RedisOutboxConfig
    _connections: RedisOutboxConnectionManager

    def __init__(
        self,
        connections: RedisOutboxConnectionManager,
        config: RedisOutboxConfig,
        outbox_config: OutboxConfig,
    ) -> None:
        self._connections = connections
        self._config = config
        self._keys = RedisKeys(check_key_prefix(config.key_prefix))
        self._owner = uuid.uuid4().hex
        self._claim_timeout_ms = max(1, round(outbox_config.claim_timeout_seconds * 1000))
        self._lease_ms = max(1, round(outbox_config.claim_lease_seconds * 1000))
        self._sweep = config.expired_claim_sweep
        self._max_bytes = outbox_config.batch_max_bytes
        self._texts: dict[int, tuple[UUID, bytes]] = {}
        """The stored text of each id this instance claimed and has not settled, by the UUID's identity."""

    @property
    def owner(self) -> str:
        """Token fencing this instance's claims."""
        return self._owner

    def target(self) -> OutboxTarget:
        """Backend ``redis``, the URL without password, and the key prefix."""
        location = f"{redact_url(self._config.url)} key prefix {self._keys.prefix}"
        if self._config.cluster:
            location += " (cluster)"
        settings = {"url": f"{SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX}URL", "key_prefix": KEY_PREFIX_VARIABLE}
        return OutboxTarget(
            backend=STORAGE_BACKEND,
            location=location,
            defaulted=tuple(
                variable
                for name, variable in settings.items()
                if name not in self._config.model_fields_set
            ),
        )

    @staticmethod
    def _pipeline[P](current: Callable[[], P], transaction: str) -> P:
        """The open transaction's pipeline, from ``current`` of the caller's flavour.

        Raises:
            OutboxTransactionRequiredError: No transaction (``transaction`` names its class) is open.
        """
        try:
            return current()
        except RedisTransactionNotActiveError:
            raise OutboxTransactionRequiredError(f"open {transaction} (or use @Transactional())") from None

    def _save_command(self, message: OutboxMessage) -> list[RedisValue]:
        """``EVAL`` arguments (after the command name) that save ``message``."""
        return [scripts.SAVE, 1, self._keys.pending, *save_arguments(self._keys.prefix, message)]

    def _fetch_args(self, limit: int, max_retry: int) -> list[RedisValue]:
        return [
            self._keys.prefix,
            limit,
            max_retry,
            min(self._claim_timeout_ms, self._lease_ms),
            self._owner,
            self._sweep,
            key_run(limit),
            self._max_bytes,
        ]

    def _settle_args(
        self,
        mode: str,
        message_ids: Sequence[UUID | bytes],
        *,
        delay_seconds: float = 0.0,
        error: str | None = None,
    ) -> list[RedisValue]:
        return [
            self._keys.prefix,
            self._owner,
            mode,
            max(0, round(delay_seconds * 1000)),
            "" if error is None else error,
            "0" if error is None else "1",
            self._ids_text(message_ids, settles=mode != Settle.INCREMENT),
        ]

    def _ids_text(self, message_ids: Sequence[UUID | bytes], *, settles: bool = False) -> bytes:
        """Ids as the scripts take them: one comma-separated argument.

        An id this instance claimed goes back as the claim read it (the
        relay hands back the claim's own UUIDs, so a lookup by identity finds
        it): the very member stored, without writing the UUID out again.
        ``settles``: the write ends these claims, so their texts are dropped.
        """
        texts = self._texts
        take = texts.pop if settles else texts.get
        parts: list[bytes] = []
        for message_id in message_ids:
            if isinstance(message_id, bytes):
                parts.append(message_id)
                continue
            held = take(id(message_id), None)
            # The entry holds its UUID, so no other object can share its identity meanwhile.
            parts.append(held[1] if held is not None and held[0] is message_id else str(message_id).encode())
        return b",".join(parts)

    def _renew_args(self, message_ids: Sequence[UUID]) -> list[RedisValue]:
        return [
            self._keys.prefix,
            self._owner,
            self._claim_timeout_ms,
            self._lease_ms,
            self._ids_text(message_ids),
        ]

    def _requeue_steps(
        self, message_ids: Sequence[UUID] | None, limit: int
    ) -> Iterator[Step]:
        if message_ids is None:
            for step in _steps(limit, _REQUEUE_CHUNK):
                yield [self._keys.prefix, step, "oldest"], step
            return
        chosen = message_ids[: max(0, limit)]
        for start in range(0, len(chosen), _REQUEUE_CHUNK):
            part = chosen[start : start + _REQUEUE_CHUNK]
            yield [self._keys.prefix, len(part), "ids", self._ids_text(part)], None

    def _purge_steps(self, before: datetime | timedelta, limit: int) -> Iterator[Step]:
        # An age is subtracted from the server's TIME in the script, as leases are.
        if isinstance(before, timedelta):
            cutoff, mode = round(before.total_seconds() * 1000), "age"
        else:
            cutoff, mode = round(before.timestamp() * 1000), "at"
        for step in _steps(limit, _PURGE_CHUNK):
            yield [self._keys.prefix, cutoff, step, mode], step

    def _decode(self, reply: Any) -> tuple[list[OutboxMessage], list[tuple[bytes, str]]]:
        """Split a claim's framed reply into messages and (id, reason) of undecodable ones; keep each id's text."""
        items = unframe(cast(bytes, reply))
        messages: list[OutboxMessage] = []
        broken: list[tuple[bytes, str]] = []
        texts = self._texts
        if len(texts) > CLAIMED_TEXTS_MAX:  # claims never settled here (failed writes): let them go
            texts.clear()
        for start in range(1, len(items), WIDTH):
            message_id = cast(bytes, items[start])
            try:
                message = to_message(message_id, items[start + 1 : start + WIDTH])
            except Exception as error:  # any damage: the message is set aside, the batch goes on
                broken.append((message_id, undecodable_reason(error)))
            else:
                messages.append(message)
                texts[id(message.id)] = (message.id, message_id)
        return messages, broken

    def _key_heads_args(self, limit: int, after: UUID | None) -> list[RedisValue]:
        return [self._keys.prefix, max(0, limit), KEY_HEADS_WINDOW, "" if after is None else str(after)]

    @staticmethod
    def _held[D: MessageDetail](kind: type[D], reply: Any) -> list[D]:
        """Decode a reply of messages framed with what holds them (``put_held``); those too damaged to decode are left out."""
        items = unframe(cast(bytes, reply))
        found: list[D] = []
        for start in range(1, len(items), WIDTH + 3):
            try:
                message = to_message(cast(bytes, items[start]), items[start + 1 : start + WIDTH])
            except Exception:
                continue
            owner, ends, due = items[start + WIDTH : start + WIDTH + 3]
            found.append(kind(message, None if owner is None else owner.decode(), _from_ms(ends), _from_ms(due)))
        return found

    def _key_heads(self, reply: Any) -> list[KeyHead]:
        return self._held(KeyHead, reply)

    def _get_message_args(self, message_id: UUID) -> list[RedisValue]:
        return [self._keys.prefix, str(message_id)]

    def _one_message(self, reply: Any) -> MessageDetail | None:
        return next(iter(self._held(MessageDetail, reply)), None)

    def _relay_claims_args(self) -> list[RedisValue]:
        # Both lanes' windows: the in-flight set holds the live claims of both.
        return [self._keys.prefix, 2 * RELAY_CLAIMS_WINDOW]

    @staticmethod
    def _relay_claims(reply: Any) -> list[RelayClaims]:
        """Decode the relay claims script's reply: (owner, deadline ms) pairs after the server time."""
        items = unframe(cast(bytes, reply))
        pairs = zip(items[1::2], items[2::2], strict=True)
        return relay_claims_of(
            (owner.decode(), until) for owner, ends in pairs if owner and (until := _from_ms(ends)) is not None
        )

    @staticmethod
    def _stats(reply: Any) -> OutboxStats:
        row = cast(list[Any], reply)
        oldest = cast(bytes | None, row[4])
        return OutboxStats(
            pending=int(row[0]),
            claimed=int(row[1]),
            published=int(row[2]),
            abandoned=int(row[3]),
            oldest_pending_age_seconds=age_seconds(oldest, cast(bytes, row[5])),
        )


