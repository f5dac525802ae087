"""Outbox SQL per dialect: claims, acknowledgements and administration.

Every operation is a plain function of a synchronous `Connection`, so the sync
storage calls it directly and the async one through
`AsyncConnection.run_sync`; both run exactly the same statements. Time always
comes from the database clock, so relays on different hosts agree.

Claims take two lanes (see docs): the oldest eligible keyless messages, and,
for partition keys visited by a rotating skip-scan cursor, the longest
eligible prefix of each key's first undelivered messages. Both are bounded by
the batch, so one claim costs O(batch) whatever the backlog.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxStats
from spakky.plugins.outbox_sqlalchemy.error import UnsupportedOutboxDialectError
from spakky.plugins.outbox_sqlalchemy.schema import UtcDateTime
from sqlalchemy import (
    BigInteger,
    Connection,
    Dialect,
    Integer,
    Row,
    Table,
    TextClause,
    Uuid,
    bindparam,
    column,
    insert,
    text,
)
from sqlalchemy.dialects import postgresql

PENDING = "published_at IS NULL AND abandoned_at IS NULL"
"""Undelivered rows: neither published nor abandoned."""

MESSAGE_COLUMNS: tuple[str, ...] = (
    "seq",
    "id",
    "event_name",
    "payload",
    "headers",
    "created_at",
    "published_at",
    "retry_count",
    "claimed_at",
    "partition_key",
    "abandoned_at",
    "last_error",
)


MAX_UNION_KEYS = 64
"""Keys per claim on dialects without LATERAL (one UNION branch each); the
rotating cursor brings the remaining keys in on the following claims."""


class DialectKind(StrEnum):
    """Dialect families the outbox SQL distinguishes."""

    POSTGRESQL = "postgresql"
    MYSQL = "mysql"
    SQLITE = "sqlite"


def dialect_kind(dialect: Dialect) -> DialectKind:
    """Map a SQLAlchemy dialect to the family the outbox SQL is written for.

    Raises:
        UnsupportedOutboxDialectError: The dialect is none of them.
    """
    if dialect.name == "postgresql":
        return DialectKind.POSTGRESQL
    if dialect.name in ("mysql", "mariadb"):
        return DialectKind.MYSQL
    if dialect.name == "sqlite":
        return DialectKind.SQLITE
    raise UnsupportedOutboxDialectError(dialect.name)


@dataclass
class ClaimCursor:
    """Where the keyed lane's walk over partition keys resumes (one per relay)."""

    after: str | None = None
    """Last key visited by a walk that stopped early; None starts from the first."""


@dataclass
class _Clock:
    now: str
    cutoff: str
    later: str


def _clock(kind: DialectKind) -> _Clock:
    if kind is DialectKind.POSTGRESQL:
        return _Clock(
            now="now()",
            cutoff="(now() - CAST(:claim_timeout AS double precision) * interval '1 second')",
            later="(now() + CAST(:delay AS double precision) * interval '1 second')",
        )
    if kind is DialectKind.MYSQL:
        return _Clock(
            now="UTC_TIMESTAMP(6)",
            cutoff="(UTC_TIMESTAMP(6) - INTERVAL :claim_timeout MICROSECOND)",
            later="(UTC_TIMESTAMP(6) + INTERVAL :delay MICROSECOND)",
        )
    fmt = "'%Y-%m-%d %H:%M:%f'"
    return _Clock(
        now=f"(strftime({fmt}, 'now') || '000')",
        cutoff=f"(strftime({fmt}, 'now', :claim_timeout) || '000')",
        later=f"(strftime({fmt}, 'now', :delay) || '000')",
    )


@dataclass
class OutboxSql:
    """Statements of one outbox table on one dialect, for one relay's owner token."""

    table: Table
    kind: DialectKind
    owner: str
    """This instance's owner token; every acknowledgement is fenced by it."""
    claim_timeout_seconds: float
    cursor: ClaimCursor = field(default_factory=ClaimCursor)

    def __post_init__(self) -> None:
        self._clock = _clock(self.kind)
        self._name = self.table.name
        self._cols = ", ".join(MESSAGE_COLUMNS)
        self._typed = [self.table.c[name] for name in MESSAGE_COLUMNS]
        self._insert = insert(self.table)
        self._eligible = (
            "retry_count < :max_retry"
            f" AND (claimed_at IS NULL OR claimed_at < {self._clock.cutoff})"
            f" AND (not_before IS NULL OR not_before <= {self._clock.now})"
        )
        self._claim_set = (
            f"UPDATE {self._name} SET claimed_at = {self._clock.now}, "
            "claimed_by = :owner, not_before = NULL"
        )
        self._keyless_probe = (
            "SELECT * FROM (SELECT seq, partition_key AS k FROM "
            f"{self._name} WHERE partition_key IS NULL AND {PENDING} AND "
            f"{self._eligible} ORDER BY seq LIMIT :batch) AS keyless "
            "UNION ALL SELECT NULL, NULL FROM (SELECT 1 AS one) AS probe WHERE EXISTS "
            f"(SELECT 1 FROM {self._name} WHERE partition_key IS NOT NULL AND {PENDING})"
        )

    # ----------------------------------------------------------------- helpers
    def seconds(self, name: str, value: float, *, sign: int = 1) -> dict[str, Any]:
        """Bind a duration the way this dialect's time arithmetic expects."""
        if self.kind is DialectKind.POSTGRESQL:
            return {name: float(value)}
        if self.kind is DialectKind.MYSQL:
            return {name: round(value * 1_000_000)}
        return {name: f"{'+' if sign >= 0 else '-'}{abs(value):.6f} seconds"}

    def _timeout(self) -> dict[str, Any]:
        return self.seconds("claim_timeout", self.claim_timeout_seconds, sign=-1)

    def _in(self, col: str, name: str) -> str:
        if self.kind is DialectKind.POSTGRESQL:
            return f"{col} = ANY(:{name})"
        return f"{col} IN :{name}"

    def _list_param(self, stmt: TextClause, name: str, *, uuid: bool) -> TextClause:
        item = Uuid() if uuid else BigInteger()
        if self.kind is DialectKind.POSTGRESQL:
            return stmt.bindparams(bindparam(name, type_=postgresql.ARRAY(item)))
        return stmt.bindparams(bindparam(name, expanding=True, type_=item))

    def _id_param(self, stmt: TextClause) -> TextClause:
        return stmt.bindparams(bindparam("id", type_=Uuid()))

    @staticmethod
    def to_message(row: Row[Any]) -> OutboxMessage:
        """Build the model from a row of `MESSAGE_COLUMNS`."""
        m = row._mapping
        return OutboxMessage(
            id=m["id"],
            event_name=m["event_name"],
            payload=bytes(m["payload"]),
            headers=dict(m["headers"] or {}),
            created_at=m["created_at"],
            published_at=m["published_at"],
            retry_count=m["retry_count"],
            claimed_at=m["claimed_at"],
            partition_key=m["partition_key"],
            abandoned_at=m["abandoned_at"],
            last_error=m["last_error"],
        )

    # -------------------------------------------------------------------- save
    def insert(self, message: OutboxMessage) -> tuple[Any, dict[str, Any]]:
        """The INSERT of ``message`` for the business session, and its parameters.

        The statement is built once per table, so SQLAlchemy compiles it once;
        a save only binds parameters.
        """
        return self._insert, {
            "id": message.id,
            "event_name": message.event_name,
            "payload": message.payload,
            "headers": dict(message.headers),
            "created_at": message.created_at,
            "published_at": message.published_at,
            "retry_count": message.retry_count,
            "claimed_at": None,
            "claimed_by": None,
            "partition_key": message.partition_key,
            "abandoned_at": message.abandoned_at,
            "last_error": message.last_error,
        }

    # ------------------------------------------------------------------ claims
    def _walk_keys(
        self, conn: Connection, after: str | None, key_limit: int
    ) -> list[str]:
        """Distinct undelivered partition keys after ``after``, in key order."""
        params: dict[str, Any] = {"key_limit": key_limit}
        if after is not None:
            params["cursor"] = after
        if self.kind is DialectKind.MYSQL:
            # The generated column's index serves DISTINCT directly; MariaDB runs
            # the recursive skip scan below far slower.
            first = (
                "pending_key > :cursor"
                if after is not None
                else "pending_key IS NOT NULL"
            )
            sql = (
                f"SELECT DISTINCT pending_key AS k FROM {self._name} WHERE {first} "
                "ORDER BY pending_key LIMIT :key_limit"
            )
            return [str(k) for k in conn.execute(text(sql), params).scalars()]
        # A skip scan: one index probe per distinct key, however long each key is.
        col, pending = "partition_key", f"{PENDING} AND "
        first = f"{col} > :cursor" if after is not None else f"{col} IS NOT NULL"
        probe = (
            f"SELECT {col} FROM {self._name} WHERE {pending}{{cond}} "
            f"ORDER BY {col} LIMIT 1"
        )
        sql = (
            "WITH RECURSIVE walk(k, n) AS ("
            f"SELECT ({probe.format(cond=first)}), 1 "
            "UNION ALL "
            f"SELECT ({probe.format(cond=f'{col} > walk.k')}), walk.n + 1 "
            "FROM walk WHERE walk.k IS NOT NULL AND walk.n < :key_limit"
            ") SELECT k FROM walk WHERE k IS NOT NULL"
        )
        return [str(k) for k in conn.execute(text(sql), params).scalars()]

    def _keys_for_claim(self, conn: Connection, key_limit: int) -> list[str]:
        after = self.cursor.after
        keys = self._walk_keys(conn, after, key_limit)
        if len(keys) >= key_limit:
            self.cursor.after = keys[-1]
            return keys
        self.cursor.after = None
        if after is not None:
            seen = set(keys)
            for key in self._walk_keys(conn, None, key_limit - len(keys)):
                if key > after or key in seen:
                    break
                keys.append(key)
        return keys

    def _key_limit(self, limit: int) -> int:
        """Keys one claim visits: twice the batch, fewer where each key is a UNION branch."""
        if self.kind is DialectKind.POSTGRESQL:
            return 2 * limit
        return min(2 * limit, MAX_UNION_KEYS)

    def _candidates(
        self, keys: Sequence[str], limit: int
    ) -> tuple[str, dict[str, Any]]:
        """The claim's candidate query: both lanes, oldest first, at most ``limit``."""
        params: dict[str, Any] = {"batch": limit}
        branches = [
            "SELECT * FROM (SELECT seq, partition_key AS k FROM "
            f"{self._name} WHERE partition_key IS NULL AND {PENDING} AND "
            f"{self._eligible} ORDER BY seq LIMIT :batch) AS keyless"
        ]
        if keys:
            params["per_key"] = max(1, math.ceil(limit / len(keys)))
            run = (
                "SELECT seq, partition_key AS k, CASE WHEN "
                f"{self._eligible} THEN 1 ELSE 0 END AS ok FROM {self._name} "
                "WHERE {cond} ORDER BY seq LIMIT :per_key"
            )
            if self.kind is DialectKind.POSTGRESQL:
                # One LATERAL probe per key: a plan whose size does not grow with it.
                params["keys"] = list(keys)
                runs_sql = (
                    "SELECT r.seq, r.k, r.ok FROM unnest(CAST(:keys AS text[])) "
                    "AS walked(key) CROSS JOIN LATERAL ("
                    + run.format(cond=f"partition_key = walked.key AND {PENDING}")
                    + ") AS r"
                )
            else:
                key_cond = (
                    "pending_key = :k{index}"
                    if self.kind is DialectKind.MYSQL
                    else f"partition_key = :k{{index}} AND {PENDING}"
                )
                runs: list[str] = []
                for index, key in enumerate(keys):
                    params[f"k{index}"] = key
                    cond = key_cond.format(index=index)
                    runs.append(f"SELECT * FROM ({run.format(cond=cond)}) AS r{index}")
                runs_sql = " UNION ALL ".join(runs)
            branches.append(
                "SELECT seq, k FROM (SELECT seq, k, MIN(ok) OVER (PARTITION BY k "
                f"ORDER BY seq) AS prefix_ok FROM ({runs_sql}) AS runs"
                ") AS prefixes WHERE prefix_ok = 1"
            )
        sql = (
            f"SELECT seq, k FROM ({' UNION ALL '.join(branches)}) AS candidates "
            "ORDER BY seq LIMIT :batch"
        )
        return sql, params

    def claim(
        self, conn: Connection, limit: int, max_retry: int
    ) -> list[OutboxMessage]:
        """Claim up to ``limit`` messages for this owner; run inside one transaction."""
        if limit <= 0:
            return []
        base = {"max_retry": max_retry, "owner": self.owner} | self._timeout()
        if self.kind is DialectKind.SQLITE:
            # Take the write lock first: a deferred transaction upgrading after
            # another writer's commit fails at once instead of waiting.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            keys = self._keys_for_claim(conn, self._key_limit(limit))
        else:
            # One cheap statement first: the keyless lane, plus whether any keyed
            # message is pending. An idle outbox costs this one statement per poll,
            # and a keyless-only backlog needs no key walk.
            found = conn.execute(text(self._keyless_probe), base | {"batch": limit}).all()
            keyed_pending = any(r[0] is None for r in found)
            if keyed_pending:
                if self.kind is DialectKind.POSTGRESQL:
                    # The key walk's estimated cost can trip JIT compilation, which
                    # costs far more than the claim itself.
                    conn.execute(text("SET LOCAL jit = off"))
                keys = self._keys_for_claim(conn, self._key_limit(limit))
            else:
                keys = []
                self.cursor.after = None
            if not keys:
                return self._lock_and_claim(conn, [r for r in found if r[0] is not None], base)
        candidates, params = self._candidates(keys, limit)
        params |= base
        if self.kind is DialectKind.SQLITE:
            stmt = text(
                f"{self._claim_set} WHERE seq IN (SELECT seq FROM ({candidates}) AS c) "
                f"RETURNING {self._cols}"
            ).columns(*self._typed)
            rows = conn.execute(stmt, params).all()
            return self._ordered(rows)
        found = conn.execute(text(candidates), params).all()
        return self._lock_and_claim(conn, found, base)

    def _lock_and_claim(
        self, conn: Connection, found: Sequence[Sequence[Any]], base: dict[str, Any]
    ) -> list[OutboxMessage]:
        """Lock the candidates that are still free, keep each key's prefix, claim them."""
        if not found:
            return []
        max_retry = base["max_retry"]
        lock = self._list_param(
            text(
                f"SELECT seq FROM {self._name} WHERE {self._in('seq', 'seqs')} "
                f"AND {PENDING} AND {self._eligible} FOR UPDATE SKIP LOCKED"
            ),
            "seqs",
            uuid=False,
        )
        lock_params = {"seqs": [int(r[0]) for r in found], "max_retry": max_retry}
        locked = {
            int(s) for s in conn.execute(lock, lock_params | self._timeout()).scalars()
        }
        accepted: list[int] = []
        blocked: set[str] = set()
        for seq, key in ((int(r[0]), r[1]) for r in found):
            if key is not None and key in blocked:
                continue
            if seq in locked:
                accepted.append(seq)
            elif key is not None:
                blocked.add(key)
        if not accepted:
            return []
        update = self._list_param(
            text(f"{self._claim_set} WHERE {self._in('seq', 'seqs')}"), "seqs", uuid=False
        )
        update_params = {"seqs": accepted, "owner": self.owner}
        if self.kind is DialectKind.POSTGRESQL:
            stmt = self._list_param(
                text(
                    f"{self._claim_set} WHERE {self._in('seq', 'seqs')} RETURNING {self._cols}"
                ),
                "seqs",
                uuid=False,
            ).columns(*self._typed)
            rows = conn.execute(stmt, update_params).all()
        else:
            conn.execute(update, update_params)
            select = self._list_param(
                text(
                    f"SELECT {self._cols} FROM {self._name} WHERE {self._in('seq', 'seqs')}"
                ),
                "seqs",
                uuid=False,
            ).columns(*self._typed)
            rows = conn.execute(select, {"seqs": accepted}).all()
        return self._ordered(rows)

    def _ordered(self, rows: Sequence[Row[Any]]) -> list[OutboxMessage]:
        by_seq = sorted(rows, key=lambda r: int(r._mapping["seq"]))
        return [self.to_message(r) for r in by_seq]

    # ------------------------------------------------------ acknowledgements
    def _fenced(self, assignments: str, *, many: bool = False) -> TextClause:
        target = self._in("id", "ids") if many else "id = :id"
        stmt = text(
            f"UPDATE {self._name} SET {assignments} WHERE {target} "
            f"AND claimed_by = :owner AND {PENDING}"
        )
        return (
            self._list_param(stmt, "ids", uuid=True) if many else self._id_param(stmt)
        )

    def mark_published(self, conn: Connection, message_id: UUID) -> None:
        """Set ``published_at`` when this owner holds the message."""
        stmt = self._fenced(f"published_at = {self._clock.now}, claimed_by = NULL")
        conn.execute(stmt, {"id": message_id, "owner": self.owner})

    def mark_published_many(
        self, conn: Connection, message_ids: Sequence[UUID]
    ) -> None:
        """Publish every message among ``message_ids`` this owner holds, in one statement."""
        if not message_ids:
            return
        stmt = self._fenced(
            f"published_at = {self._clock.now}, claimed_by = NULL", many=True
        )
        conn.execute(stmt, {"ids": list(message_ids), "owner": self.owner})

    def increment_retry(self, conn: Connection, message_id: UUID) -> None:
        """Spend one retry and keep the lease: the message returns when it expires."""
        stmt = self._fenced("retry_count = retry_count + 1")
        conn.execute(stmt, {"id": message_id, "owner": self.owner})

    def abandon(self, conn: Connection, message_id: UUID, error: str | None) -> None:
        """Set ``abandoned_at`` (and the reason, when given) when this owner holds it."""
        assignments = f"abandoned_at = {self._clock.now}, claimed_by = NULL"
        params: dict[str, Any] = {"id": message_id, "owner": self.owner}
        if error is not None:
            assignments += ", last_error = :error"
            params["error"] = error
        conn.execute(self._fenced(assignments), params)

    def schedule_retry(
        self, conn: Connection, message_id: UUID, delay_seconds: float, error: str
    ) -> None:
        """Spend one retry, keep ``error``, release the claim until the delay passed."""
        stmt = self._fenced(
            "retry_count = retry_count + 1, last_error = :error, claimed_by = NULL, "
            f"claimed_at = NULL, not_before = {self._clock.later}"
        )
        params = {"id": message_id, "owner": self.owner, "error": error}
        conn.execute(stmt, params | self.seconds("delay", max(0.0, delay_seconds)))

    def release(self, conn: Connection, message_ids: Sequence[UUID]) -> None:
        """Drop this owner's claims on ``message_ids`` without spending retries."""
        if not message_ids:
            return
        stmt = self._fenced("claimed_by = NULL, claimed_at = NULL", many=True)
        conn.execute(stmt, {"ids": list(message_ids), "owner": self.owner})

    # --------------------------------------------------------- administration
    def stats(self, conn: Connection) -> OutboxStats:
        """Counts by state and the oldest pending age, by the database clock."""
        stmt = text(
            "SELECT "
            f"COALESCE(SUM(CASE WHEN {PENDING} THEN 1 ELSE 0 END), 0) AS pending, "
            f"COALESCE(SUM(CASE WHEN {PENDING} AND claimed_by IS NOT NULL "
            f"AND claimed_at >= {self._clock.cutoff} THEN 1 ELSE 0 END), 0) AS claimed, "
            "COALESCE(SUM(CASE WHEN published_at IS NOT NULL THEN 1 ELSE 0 END), 0) "
            "AS published, "
            "COALESCE(SUM(CASE WHEN published_at IS NULL AND abandoned_at IS NOT NULL "
            "THEN 1 ELSE 0 END), 0) AS abandoned, "
            f"MIN(CASE WHEN {PENDING} THEN created_at END) AS oldest, "
            f"{self._clock.now} AS db_now "
            f"FROM {self._name}"
        ).columns(
            column("pending", Integer()),
            column("claimed", Integer()),
            column("published", Integer()),
            column("abandoned", Integer()),
            column("oldest", UtcDateTime()),
            column("db_now", UtcDateTime()),
        )
        row = conn.execute(stmt, self._timeout()).one()
        oldest: datetime | None = row.oldest
        now: datetime = row.db_now
        age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
        return OutboxStats(
            pending=int(row.pending),
            claimed=int(row.claimed),
            published=int(row.published),
            abandoned=int(row.abandoned),
            oldest_pending_age_seconds=age,
        )

    def list_abandoned(self, conn: Connection, limit: int) -> list[OutboxMessage]:
        """Abandoned messages, oldest first, with their last error."""
        stmt = text(
            f"SELECT {self._cols} FROM {self._name} WHERE abandoned_at IS NOT NULL "
            "AND published_at IS NULL ORDER BY seq LIMIT :limit"
        ).columns(*self._typed)
        return [self.to_message(r) for r in conn.execute(stmt, {"limit": limit})]

    def requeue_abandoned(
        self, conn: Connection, message_ids: Sequence[UUID] | None
    ) -> int:
        """Make abandoned messages pending again with a fresh retry budget."""
        sql = (
            f"UPDATE {self._name} SET abandoned_at = NULL, retry_count = 0, "
            "claimed_at = NULL, claimed_by = NULL, not_before = NULL "
            "WHERE abandoned_at IS NOT NULL AND published_at IS NULL"
        )
        if message_ids is None:
            return conn.execute(text(sql)).rowcount
        if not message_ids:
            return 0
        stmt = self._list_param(
            text(f"{sql} AND {self._in('id', 'ids')}"), "ids", uuid=True
        )
        return conn.execute(stmt, {"ids": list(message_ids)}).rowcount

    def purge_published(self, conn: Connection, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` messages published before ``before``."""
        if limit <= 0:
            return 0
        if self.kind is DialectKind.MYSQL:
            sql = (
                f"DELETE FROM {self._name} WHERE published_at < :before "
                "ORDER BY published_at LIMIT :limit"
            )
        else:
            sql = (
                f"DELETE FROM {self._name} WHERE seq IN (SELECT seq FROM {self._name} "
                "WHERE published_at < :before ORDER BY published_at LIMIT :limit)"
            )
        stmt = text(sql).bindparams(bindparam("before", type_=UtcDateTime()))
        return conn.execute(stmt, {"before": before, "limit": limit}).rowcount
