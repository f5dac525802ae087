# Sync twin generated from packages/spakky-outbox-redis/src/spakky/plugins/outbox_redis/async_storage.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 16c9030a1f3bbe0c3024f1171712a1176ce7bb26f355e0be1f551acf59995e12
"""The Redis outbox storage of the sync flavour (redis-py synchronous clients)."""

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, cast, override
from uuid import UUID

from redis.commands.core import Script
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.figures import (
    RELAY_FIGURES_READ_LIMIT,
    RELAY_FIGURES_RETENTION,
    RelayFigures,
)
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import KeyHead, MessageDetail, OutboxStats, RelayClaims
from spakky.outbox.ports.storage import (
    IOutboxFullStorage,
)
from spakky.plugins.outbox_redis.client import (
    RedisClient,
)
from spakky.plugins.outbox_redis.codec import (
    RedisValue,
    decode_figures,
    encode_figures,
    epoch_ms,
)
from spakky.plugins.outbox_redis.pipelines import current_pipeline
from spakky.plugins.outbox_redis.storage_base import (
    SCRIPTS,
    AbandonedListing,
    RedisOutboxStorageBase,
    Settle,
    Step,
    storage_errors,
    wake_up_slices,
)


@Pod()
class RedisOutboxStorage(
    RedisOutboxStorageBase,
    IOutboxFullStorage,
):
    """Synchronous Redis outbox storage with every optional capability."""

    _scripts: dict[str, Script] | None = None
    """This flavour's registered scripts, made on first use."""

    def _script(self, name: str, client: RedisClient) -> Script:
        if self._scripts is None:
            self._scripts = {k: client.register_script(v) for k, v in SCRIPTS.items()}
        return self._scripts[name]

    def _run(self, name: str, args: Sequence[RedisValue]) -> Any:
        """Run a script on this flavour's client (re-loaded on NOSCRIPT)."""
        client = self._connections.client
        with storage_errors(self._config):
            return self._script(name, client)(
                keys=[self._keys.pending], args=args, client=client
            )

    @override
    def save(self, message: OutboxMessage) -> None:
        """Queue the message on the current transaction's pipeline.

        Raises:
            OutboxTransactionRequiredError: No `RedisTransaction` is open.
            InvalidOutboxMessageError: A field cannot be stored.
        """
        pipeline = self._pipeline(current_pipeline, "a RedisTransaction")
        # EVAL, not EVALSHA: inside MULTI an unknown script would fail at EXEC
        # and the business writes would commit without the message
        cast(Any, pipeline.execute_command("EVAL", *self._save_command(message)))

    @override
    def fetch_pending(self, limit: int, max_retry: int) -> list[OutboxMessage]:
        """Claim up to ``limit`` messages for this instance, oldest first, keys as runs."""
        if limit <= 0:
            return []
        messages, broken = self._decode(
            self._run("fetch", self._fetch_args(limit, max_retry))
        )
        for message_id, reason in broken:
            self._run(
                "settle", self._settle_args(Settle.ABANDON, [message_id], error=reason)
            )
        return messages

    @override
    def mark_published(self, message_id: UUID) -> None:
        """Mark a message this instance holds as published."""
        self._run("settle", self._settle_args(Settle.PUBLISH, [message_id]))

    @override
    def mark_published_many(self, message_ids: Sequence[UUID]) -> int:
        """Mark every message this instance still holds among ``message_ids`` published; count them."""
        if not message_ids:
            return 0
        return int(self._run("settle", self._settle_args(Settle.PUBLISH, message_ids)))

    @override
    def increment_retry(self, message_id: UUID) -> None:
        """Spend one retry; the claim stays until it ends."""
        self._run("settle", self._settle_args(Settle.INCREMENT, [message_id]))

    @override
    def mark_abandoned(self, message_id: UUID) -> None:
        """Abandon the message; it stays readable and unblocks its key."""
        self._run("settle", self._settle_args(Settle.ABANDON, [message_id]))

    @override
    def schedule_retry(
        self, message_id: UUID, delay_seconds: float, error: str
    ) -> None:
        """Spend one retry, keep ``error``, and re-offer the message after the delay."""
        self._run(
            "settle",
            self._settle_args(
                Settle.RETRY, [message_id], delay_seconds=delay_seconds, error=error
            ),
        )

    @override
    def abandon(self, message_id: UUID, error: str) -> None:
        """Abandon the message, keeping ``error`` as the reason."""
        self._run(
            "settle", self._settle_args(Settle.ABANDON, [message_id], error=error)
        )

    @override
    def release(self, message_ids: Sequence[UUID]) -> None:
        """Give up this instance's claims without spending retry budget."""
        if message_ids:
            self._run("settle", self._settle_args(Settle.RELEASE, message_ids))

    @override
    def renew_claims(self, message_ids: Sequence[UUID]) -> int:
        """Push the lease of the claims this instance still holds; return how many."""
        if not message_ids:
            return 0
        return int(self._run("renew", self._renew_args(message_ids)))

    @override
    def wait_for_messages(self, timeout: float) -> bool:
        """Block on the wake-up marker (BZPOPMIN) for up to ``timeout`` seconds.

        The block runs in slices of half the socket timeout: one BZPOPMIN
        longer than it would end in a read timeout, not in a quiet wait.
        """
        client = self._connections.client
        with storage_errors(self._config):
            if timeout <= 0:
                popped: Any = client.zpopmin(self._keys.wake)
                return bool(popped)
            for step in wake_up_slices(timeout, self._config.socket_timeout_seconds):
                if client.bzpopmin(self._keys.wake, step) is not None:
                    return True
        return False

    @override
    def stats(self, timeout_seconds: float | None = None) -> OutboxStats:
        """Count messages by state and measure the oldest pending one: exact, O(log n).

        One short script (ZCARD, ZCOUNT and the head of the pending set), so
        there is nothing to cap and nothing left running to stop.
        """
        return self._stats(self._run("stats", [self._keys.prefix]))

    @override
    def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
        """Return up to ``limit`` abandoned messages, oldest first, with their last error.

        Payloads and headers are never read (listed messages carry ``b""`` and
        ``{}``), and the list is read in chunks of a few hundred, each one
        short script, so a listing of any size never holds the server for long. A
        record without its name or creation time is left out of the list.
        """
        listing = AbandonedListing(self._keys.prefix, limit)
        while not listing.done:
            listing.add(self._run("abandoned", listing.next_args()))
        return listing.messages

    @override
    def requeue_abandoned(
        self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000
    ) -> int:
        """Make up to ``limit`` abandoned messages pending again (None: the oldest ones)."""
        return self._run_steps("requeue", self._requeue_steps(message_ids, limit))

    @override
    def key_heads(self, limit: int = 50, after: UUID | None = None) -> list[KeyHead]:
        """Return the heads of up to ``limit`` keys, oldest first, after the head ``after``.

        One script walks the undelivered messages in save order (at most
        `KEY_HEADS_WINDOW` of them) and keeps those that head their key.
        """
        if limit <= 0:
            return []
        return self._key_heads(self._run("key_heads", self._key_heads_args(limit, after)))

    @override
    def get_message(self, message_id: UUID) -> MessageDetail | None:
        """Return one message in whatever state, with its payload and headers (one script, O(1))."""
        return self._one_message(self._run("get_message", self._get_message_args(message_id)))

    @override
    def relay_claims(self) -> list[RelayClaims]:
        """Return the relay instances holding live claims (one script over the in-flight set, O(window))."""
        return self._relay_claims(self._run("relay_claims", self._relay_claims_args()))

    @override
    def purge_published(self, before: datetime | timedelta, limit: int = 10_000) -> int:
        """Delete up to ``limit`` messages published before ``before``."""
        return self._run_steps("purge", self._purge_steps(before, limit))

    @override
    def write_relay_figures(self, figures: RelayFigures) -> None:
        """Add one window to the figures set and trim the set to the retention (one script)."""
        cutoff = epoch_ms(figures.ended_at - RELAY_FIGURES_RETENTION)
        self._run(
            "write_figures", [self._keys.prefix, encode_figures(figures), epoch_ms(figures.ended_at), cutoff]
        )

    @override
    def relay_figures(self, since: datetime, limit: int = RELAY_FIGURES_READ_LIMIT) -> list[RelayFigures]:
        """Up to ``limit`` windows that ended after ``since``, the latest end first (one ZRANGE, O(log n + limit))."""
        if limit <= 0:
            return []
        members = self._run("read_figures", [self._keys.prefix, epoch_ms(since), limit])
        return [decode_figures(member) for member in members]

    def _run_steps(self, name: str, steps: Iterator[Step]) -> int:
        done = 0
        for args, step in steps:
            count = int(self._run(name, args))
            done += count
            if step is not None and count < step:
                break
        return done
