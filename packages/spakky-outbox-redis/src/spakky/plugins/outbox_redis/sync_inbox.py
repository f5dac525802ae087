# Sync twin generated from packages/spakky-outbox-redis/src/spakky/plugins/outbox_redis/async_inbox.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): 9d8098a5739aff198547d0e43aaabe8a06947317f288c3241a53cc966a3364f1
"""The Redis inbox of the sync flavour (redis-py synchronous clients)."""

import uuid
from datetime import datetime
from typing import Any, cast, override

from redis.commands.core import Script
from redis.exceptions import WatchError
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.error import OutboxTransactionRequiredError
from spakky.outbox.ports.inbox import IInboxStorage, InboxLease, InboxStats
from spakky.plugins.outbox_redis.client import RedisClient
from spakky.plugins.outbox_redis.error import (
    InboxRecordNotFirstError,
    RedisTransactionNotActiveError,
)
from spakky.plugins.outbox_redis.inbox_base import SCRIPTS, RedisInboxBase, ScriptCall
from spakky.plugins.outbox_redis.pipelines import (
    Pipeline,
    current_pipeline,
    execute_now,
)
from spakky.plugins.outbox_redis.storage_base import storage_errors


@Pod()
class RedisInboxStorage(RedisInboxBase, IInboxStorage):
    """Synchronous Redis inbox: records join the MULTI/EXEC of `RedisTransaction`."""

    _scripts: dict[str, Script] | None = None
    """This flavour's registered scripts, made on first use."""

    def _run(self, call: ScriptCall) -> Any:
        """Run one script on this flavour's client (re-loaded on NOSCRIPT)."""
        name, keys, args = call
        client: RedisClient = self._connections.client
        if self._scripts is None:
            self._scripts = {k: client.register_script(v) for k, v in SCRIPTS.items()}
        with storage_errors(self._config):
            return self._scripts[name](keys=keys, args=args, client=client)

    @staticmethod
    def _transaction() -> Pipeline:
        try:
            return current_pipeline()
        except RedisTransactionNotActiveError:
            raise OutboxTransactionRequiredError("open a RedisTransaction (or use @Transactional())") from None

    @override
    def record(self, consumer: str, message_id: str) -> bool:
        """WATCH the record and read it; when new, queue it in the transaction's MULTI.

        A duplicate is found here, before the handler runs. A transaction
        racing on the same message that commits first changes the watched
        key, so this one's EXEC is refused: `RedisTransaction` raises
        `InboxConflictError` and nothing of it is written.

        Raises:
            OutboxTransactionRequiredError: No `RedisTransaction` is open.
            InboxRecordNotFirstError: The transaction queued commands (or a
                new record) already: the WATCH must come before them.
        """
        pipeline = self._transaction()
        key, command = self._record_command(consumer, message_id)
        if len(pipeline):
            raise InboxRecordNotFirstError(f"{len(pipeline)} command(s) queued before it")
        with storage_errors(self._config, WatchError):
            execute_now(pipeline, "WATCH", key)
            found = execute_now(pipeline, "EXISTS", key)
            if found:
                # back to queueing: the skipped handler's transaction commits nothing of ours
                execute_now(pipeline, "UNWATCH")
                return False
        pipeline.multi()
        # EVAL, not EVALSHA: inside MULTI an unknown script would fail at EXEC
        # and the business writes would commit without the record
        cast(Any, pipeline.execute_command("EVAL", *command))
        return True

    @override
    def acquire_lease(self, consumer: str, message_id: str, lease_seconds: float) -> InboxLease:
        """Lease a new record (or a lapsed lease) for ``lease_seconds``, at once, in one script."""
        token = uuid.uuid4().hex
        return self._lease(self._run(self._acquire(consumer, message_id, lease_seconds, token)), token)

    @override
    def finish_lease(self, consumer: str, message_id: str, token: str) -> bool:
        """Mark the record done if ``token`` still holds its lease; its window starts now."""
        return bool(self._run(self._finish(consumer, message_id, token)))

    @override
    def release_lease(self, consumer: str, message_id: str, token: str) -> None:
        """Delete the record if ``token`` still holds its lease."""
        self._run(self._release(consumer, message_id, token))

    @override
    def purge(self, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` records written before ``before``, oldest first, in short scripts."""
        done = 0
        for call in self._purge_steps(before, limit):
            count = int(self._run(call))
            done += count
            if count < int(call[2][1]):
                break
        return done

    @property
    @override
    def expires_by_itself(self) -> bool:
        """Every record carries its own expiry (``PX``), and writes trim the index."""
        return True

    @override
    def stats(self) -> InboxStats:
        """Count the records within the window, the leased ones, and find the oldest: O(log n)."""
        return self._stats(self._run(self._stats_call()))
