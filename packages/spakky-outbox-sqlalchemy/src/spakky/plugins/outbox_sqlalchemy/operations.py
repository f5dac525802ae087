"""Outbox SQL per dialect: claims, leases, acknowledgements and administration.

Every operation is a plain function of a synchronous `Connection`, so the sync
storage calls it directly and the async one through
`AsyncConnection.run_sync`; both run exactly the same statements. Time always
comes from the database clock, so relays on different hosts agree.

A claim sets ``lease_until``, the moment it ends: its lease
(``claim_lease_seconds``) or the claim timeout, whichever comes first; a
renewal moves it to now + lease, never past the claim timeout. A row is
claimable when it has no claim or its ``lease_until`` has passed.

Claims take two lanes (see docs): the oldest eligible keyless messages, and
runs of each key's oldest undelivered messages (`key_run` long), keys visited
by a rotating skip-scan cursor until the runs fill the batch; `choose_batch`
merges them. Both lanes are bounded by the batch, so one claim costs O(batch)
whatever the backlog, and whatever the planner's statistics say: on
MySQL/MariaDB every claim statement names its index (``FORCE INDEX``), since
InnoDB's refreshed statistics during a backlog made it walk the primary key over
every delivered row; elsewhere each statement asks for the order only its
partial index gives, so a scan of the table can never look cheaper.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from spakky.outbox.backend.claims import (
    KEY_RUN,
    choose_batch,
    key_run,
    undecodable_reason,
    within_bytes,
)
from spakky.outbox.common.config import DEFAULT_BATCH_MAX_BYTES
from spakky.outbox.common.message import OutboxMessage, restored_message
from spakky.outbox.common.stats import (
    KEY_HEADS_WINDOW,
    RELAY_CLAIMS_WINDOW,
    STATS_COUNT_CAP,
    KeyHead,
    MessageDetail,
    OutboxStats,
    RelayClaims,
    sort_relay_claims,
)
from spakky.plugins.outbox_sqlalchemy.error import UnsupportedOutboxDialectError
from spakky.plugins.outbox_sqlalchemy.schema import (
    MESSAGE_COLUMNS,
    UtcDateTime,
    as_utc,
    index_name,
)
from sqlalchemy import (
    BigInteger,
    Connection,
    Dialect,
    Integer,
    Row,
    Table,
    Text,
    TextClause,
    Uuid,
    bindparam,
    column,
    insert,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import TextualSelect

PENDING = "published_at IS NULL AND abandoned_at IS NULL"
"""Undelivered rows: neither published nor abandoned."""
ABANDONED = "abandoned_at IS NOT NULL AND published_at IS NULL"
"""Abandoned rows (the ones operators list and requeue)."""

MAX_UNION_KEYS = 64
"""Keys per statement on dialects without LATERAL (one UNION branch each)."""
WALK_EXAMINED = 10_000
"""Index entries a MariaDB key walk's statement may read (``LIMIT ROWS EXAMINED``) before it probes key by key.

Keys whose entries fit in it come out of one statement, as before; past it
each further key is a probe reading one entry, so a walk never reads more
than this (plus one entry per key) however deep its keys are."""
KEYS_PER_BATCH = 2
"""Keys one claim visits at most, per message of the batch (keys whose head
another relay holds yield nothing, so a claim may look past some)."""
CLAIM_ATTEMPTS = 3
"""Choices one claim makes when concurrent claims took every candidate it chose."""


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
    """Last key a claim finished with; None starts from the first key."""
    run_length: float = float(KEY_RUN)
    """Eligible messages per visited key in recent claims: how many keys the
    next claim walks at first (fewer when runs are long)."""
    keyed_pending: bool = True
    """Whether the last claim saw a keyed message pending (True until one looked)."""


class _Clock:
    """Time arithmetic on the database clock, per dialect."""

    _SQLITE_FORMAT = "'%Y-%m-%d %H:%M:%f'"

    def __init__(self, kind: DialectKind) -> None:
        self.kind = kind
        if kind is DialectKind.POSTGRESQL:
            self.now = "now()"
        elif kind is DialectKind.MYSQL:
            self.now = "UTC_TIMESTAMP(6)"
        else:
            # SQLite stores UtcDateTime as text with microseconds; match it.
            self.now = f"(strftime({self._SQLITE_FORMAT}, 'now') || '000')"
        self.least = "MIN" if kind is DialectKind.SQLITE else "LEAST"

    def after(self, param: str, start: str | None = None) -> str:
        """``start`` (default: now) plus the seconds bound as ``param`` (see `seconds`)."""
        if self.kind is DialectKind.POSTGRESQL:
            base = start or "now()"
            return f"({base} + CAST(:{param} AS double precision) * interval '1 second')"
        if self.kind is DialectKind.MYSQL:
            return f"({start or 'UTC_TIMESTAMP(6)'} + INTERVAL :{param} MICROSECOND)"
        base = start or "'now'"
        return f"(strftime({self._SQLITE_FORMAT}, {base}, :{param}) || '000')"

    def ago(self, param: str) -> str:
        """Now minus the seconds bound as ``param`` with ``seconds(..., back=True)``."""
        if self.kind is DialectKind.POSTGRESQL:
            return f"(now() - CAST(:{param} AS double precision) * interval '1 second')"
        if self.kind is DialectKind.MYSQL:
            return f"(UTC_TIMESTAMP(6) - INTERVAL :{param} MICROSECOND)"
        return self.after(param)

    def seconds(self, name: str, value: float, *, back: bool = False) -> dict[str, Any]:
        """Bind a non-negative duration the way `after` (or, ``back``, `ago`) expects it."""
        value = max(0.0, value)
        if self.kind is DialectKind.POSTGRESQL:
            return {name: float(value)}
        if self.kind is DialectKind.MYSQL:
            return {name: round(value * 1_000_000)}
        return {name: f"{'-' if back else '+'}{value:.6f} seconds"}


def decode_headers(raw: object) -> dict[str, str]:
    """Headers from their stored JSON text.

    Raises:
        ValueError: The text is not JSON or not a JSON object.
    """
    if raw == "{}":  # what most events carry: no parse needed
        return {}
    value: object = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    if not isinstance(value, dict):
        raise ValueError(f"headers are not a JSON object: {str(raw)[:200]!r}")
    return dict(value)  # pyright: ignore[reportUnknownArgumentType]


def _fresh(message: OutboxMessage) -> bool:
    """Whether ``message`` is as the bus builds it: never delivered, refused nor abandoned."""
    return (
        message.retry_count == 0
        and message.published_at is None
        and message.abandoned_at is None
        and message.last_error is None
    )


@dataclass
class OutboxSql:
    """Statements of one outbox table on one dialect, for one relay's owner token."""

    table: Table
    dialect: Dialect
    owner: str
    """This instance's owner token; every acknowledgement is fenced by it."""
    claim_timeout_seconds: float
    claim_lease_seconds: float
    batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES
    """Payload bytes one claim may hold (a larger message is claimed alone)."""
    cursor: ClaimCursor = field(default_factory=ClaimCursor)
    count_cap: int = STATS_COUNT_CAP
    """Where `stats` stops counting each state."""

    def __post_init__(self) -> None:
        self.kind = dialect_kind(self.dialect)
        clock = self._clock = _Clock(self.kind)
        # The one place the table's name enters SQL text: quoted as the dialect
        # needs (reserved words such as ``order``, mixed case such as ``Outbox``).
        self._name = self.dialect.identifier_preparer.format_table(self.table)
        # Headers come back as text and are decoded row by row, so one damaged
        # row cannot fail a whole claim.
        raw_headers = {
            DialectKind.POSTGRESQL: "CAST(headers AS TEXT) AS headers",
            DialectKind.MYSQL: "CAST(headers AS CHAR) AS headers",
            DialectKind.SQLITE: "headers",
        }[self.kind]
        self._cols = ", ".join(
            raw_headers if name == "headers" else name for name in MESSAGE_COLUMNS
        )
        self._typed = [
            column("headers", Text()) if name == "headers" else self.table.c[name]
            for name in MESSAGE_COLUMNS
        ]
        self._insert = insert(self.table)
        self._driver_insert = (
            f"INSERT INTO {self._name} (id, event_name, payload, headers, created_at, "
            "partition_key, retry_count) VALUES ($1, $2, $3, $4, $5, $6, 0)"
            if self.dialect.driver == "asyncpg"
            else None
        )
        self._eligible = (
            "retry_count < :max_retry"
            f" AND (lease_until IS NULL OR lease_until <= {clock.now})"
            f" AND (not_before IS NULL OR not_before <= {clock.now})"
        )
        # The payload's length in bytes, read by the database: no payload
        # leaves it to decide what a claim's byte budget admits.
        self._size = {
            DialectKind.POSTGRESQL: "octet_length(payload)",
            DialectKind.MYSQL: "LENGTH(payload)",
            DialectKind.SQLITE: "length(CAST(payload AS BLOB))",
        }[self.kind]
        self._claim_set = (
            f"UPDATE {self._name} SET claimed_at = {clock.now}, claimed_by = :owner, "
            f"not_before = NULL, lease_until = {clock.after('claim_span')}"
        )
        # Whether any keyed message is pending: the first key in key order, which
        # only the keyed index yields without reading the table (an EXISTS let
        # PostgreSQL pick a full scan on statistics from before a drain).
        any_key = (
            f"SELECT pending_key FROM {self._name}{self._force('pending_key')} "
            "WHERE pending_key IS NOT NULL ORDER BY pending_key LIMIT 1"
            if self.kind is DialectKind.MYSQL
            else f"SELECT partition_key FROM {self._name} WHERE {PENDING} "
            "AND partition_key IS NOT NULL ORDER BY partition_key LIMIT 1"
        )
        self._keyless_probe = (
            f"SELECT * FROM (SELECT seq, partition_key AS k, {self._size} AS size FROM "
            f"{self._name}{self._force('state')} WHERE partition_key IS NULL AND "
            f"{PENDING} AND {self._eligible} ORDER BY seq LIMIT :batch) AS keyless "
            "UNION ALL SELECT NULL, NULL, NULL FROM (SELECT 1 AS one) AS probe "
            f"WHERE ({any_key}) IS NOT NULL"
        )
        # PostgreSQL, while no keyed message is pending: the keyless lane claimed in
        # one statement (lock, byte budget, claim and the keyed probe), which needs
        # no transaction. The budget keeps the oldest locked rows whose running
        # payload total fits, and always the first (window functions cannot take
        # FOR UPDATE, hence two steps; the rows cut stay free).
        self._keyless_claim = (
            f"WITH locked AS (SELECT seq, {self._size} AS size FROM {self._name} "
            f"WHERE partition_key IS NULL AND {PENDING} AND {self._eligible} "
            "ORDER BY seq LIMIT :batch FOR UPDATE SKIP LOCKED), "
            "picked AS (SELECT seq FROM (SELECT seq, SUM(size) OVER (ORDER BY seq) AS total, "
            "ROW_NUMBER() OVER (ORDER BY seq) AS n FROM locked) AS budget "
            "WHERE total <= :max_bytes OR n = 1), "
            f"claimed AS ({self._claim_set} WHERE seq IN (SELECT seq FROM picked) "
            f"RETURNING {self._cols}) "
            "SELECT claimed.*, 0 AS keyed FROM claimed UNION ALL SELECT "
            + "NULL, " * len(MESSAGE_COLUMNS)
            + f"1 FROM (SELECT 1 AS one) AS probe WHERE ({any_key}) IS NOT NULL"
        )

    # ----------------------------------------------------------------- helpers
    def _force(self, index: str | None) -> str:
        """On MySQL/MariaDB, the hint binding a statement to one of the table's indexes.

        ``index`` is an index suffix (see `index_name`), None for the primary
        key; other dialects get no hint.
        """
        if self.kind is not DialectKind.MYSQL:
            return ""
        name = (
            "PRIMARY"
            if index is None
            else self.dialect.identifier_preparer.quote(index_name(self.table.name, index))
        )
        return f" FORCE INDEX ({name})"

    def _durations(self) -> dict[str, Any]:
        """The claim's span (lease, capped by the timeout), lease and timeout."""
        clock = self._clock
        span = min(self.claim_lease_seconds, self.claim_timeout_seconds)
        return (
            clock.seconds("claim_span", span)
            | clock.seconds("claim_lease", self.claim_lease_seconds)
            | clock.seconds("claim_timeout", self.claim_timeout_seconds)
        )

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
    def to_message(row: Row[Any], headers: dict[str, str] | None = None) -> OutboxMessage:
        """Build the model from a row of `MESSAGE_COLUMNS` (headers as stored text).

        Raises:
            ValueError: The stored headers cannot be decoded (unless given).
        """
        # By position (the order of `MESSAGE_COLUMNS`): a claim builds a hundred
        # of these per batch, and name lookups on a row cost more than the rest.
        cells: tuple[Any, ...] = tuple(row)
        return restored_message(
            cells[1],
            cells[2],
            bytes(cells[3]),
            decode_headers(cells[4]) if headers is None else headers,
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9],
            cells[10],
            cells[11],
        )

    # -------------------------------------------------------------------- save
    def insert(self, message: OutboxMessage) -> tuple[Any, dict[str, Any]]:
        """The INSERT of ``message`` for the business session, and its parameters.

        The statement is built once per table, so SQLAlchemy compiles it once
        per column set; a save only binds parameters. A fresh message (the
        case of every ``bus.send``) binds only the columns it sets: each bound
        column costs a type conversion per save, and the rest are NULL or 0.
        """
        fresh = {
            "id": message.id,
            "event_name": message.event_name,
            "payload": message.payload,
            "headers": dict(message.headers),
            "created_at": message.created_at,
            "partition_key": message.partition_key,
        }
        if _fresh(message):
            return self._insert, fresh
        return self._insert, fresh | {
            "published_at": message.published_at,
            "retry_count": message.retry_count,
            "claimed_at": None,
            "claimed_by": None,
            "abandoned_at": message.abandoned_at,
            "last_error": message.last_error,
        }

    def driver_insert(self, message: OutboxMessage) -> tuple[str, tuple[Any, ...]] | None:
        """The INSERT of a fresh ``message`` as SQL text for the driver, where it pays; else None.

        On asyncpg, SQLAlchemy's statement execution (cache lookup, bind
        processing, result set-up) cost about as much client time per save as
        the database's own work on the row; `exec_driver_sql` with these
        parameters (already in the form asyncpg and SQLAlchemy's JSON codec take)
        runs the same prepared INSERT in the same transaction without it.
        """
        if self._driver_insert is None or not _fresh(message):
            return None
        return self._driver_insert, (
            message.id,
            message.event_name,
            message.payload,
            json.dumps(dict(message.headers)),
            as_utc(message.created_at),
            message.partition_key,
        )

    # ------------------------------------------------------------------ claims
    def _walk_keys(
        self, conn: Connection, after: str | None, until: str | None, key_limit: int
    ) -> list[str]:
        """Distinct undelivered keys after ``after`` and up to ``until``, in key order."""
        col = "pending_key" if self.kind is DialectKind.MYSQL else "partition_key"
        first, bound, params = self._walk_range(col, after, until)
        params["key_limit"] = key_limit
        if self.kind is DialectKind.MYSQL:
            return self._walk_keys_mysql(conn, col, first, bound, params, key_limit)
        sql = f"{self._skip_scan(first, bound)} SELECT k FROM walk WHERE k IS NOT NULL"
        return [str(k) for k in conn.execute(text(sql), params).scalars()]

    def _walk_keys_mysql(
        self,
        conn: Connection,
        col: str,
        first: str,
        bound: str,
        params: dict[str, Any],
        key_limit: int,
    ) -> list[str]:
        """`_walk_keys` on MySQL/MariaDB: ``SELECT DISTINCT`` over the key index, bounded on MariaDB.

        The generated column's index serves DISTINCT directly (MariaDB runs
        the recursive skip scan far slower: a full index scan per step). But
        MariaDB uses no loose index scan for it, so the DISTINCT read every
        entry of each key it passed: at 1.2M published + 150k pending 15,001
        entries for 20 keys of 750, and keys millions deep would cost millions
        per claim. On MariaDB the statement stops after `WALK_EXAMINED` entries
        (``LIMIT ROWS EXAMINED``, which returns the keys found so far); each key
        still missing is then one probe reading one entry. MySQL has no such
        clause and keeps the plain DISTINCT.
        """
        force = self._force("pending_key")
        mariadb = bool(getattr(self.dialect, "is_mariadb", False))
        examined = f" ROWS EXAMINED {WALK_EXAMINED}" if mariadb else ""
        sql = (
            f"SELECT DISTINCT {col} AS k FROM {self._name}{force} "
            f"WHERE {first}{bound} ORDER BY {col} LIMIT :key_limit{examined}"
        )
        keys = [str(k) for k in conn.execute(text(sql), params).scalars()]
        if not mariadb or len(keys) >= key_limit:
            return keys
        # Fewer keys: the range ran out, or the bound stopped the read inside a deep key.
        while len(keys) < key_limit:
            start, cursor = (f"{col} > :cursor", {"cursor": keys[-1]}) if keys else (first, {})
            probe = (
                f"SELECT {col} FROM {self._name}{force} WHERE {start}{bound} "
                f"ORDER BY {col} LIMIT 1"
            )
            key = conn.execute(text(probe), params | cursor).scalar()
            if key is None:
                break
            keys.append(str(key))
        return keys

    @staticmethod
    def _walk_range(col: str, after: str | None, until: str | None) -> tuple[str, str, dict[str, Any]]:
        """Where a key walk starts (after ``after``, or the first key), its bound (up to ``until``), their parameters."""
        params: dict[str, Any] = {}
        first = f"{col} IS NOT NULL"
        if after is not None:
            first, params["cursor"] = f"{col} > :cursor", after
        bound = ""
        if until is not None:
            bound, params["until"] = f" AND {col} <= :until", until
        return first, bound, params

    def _skip_scan(self, first: str, bound: str) -> str:
        """``WITH RECURSIVE walk(k, n)``: up to ``:key_limit`` distinct undelivered keys from ``first``, in key order.

        One index probe per distinct key, however long each key is; ``bound``
        (empty or ``AND ...``) limits every probe. PostgreSQL and SQLite.
        """
        probe = (
            f"SELECT partition_key FROM {self._name} WHERE {PENDING} AND {{cond}}{bound} "
            "ORDER BY partition_key LIMIT 1"
        )
        return (
            "WITH RECURSIVE walk(k, n) AS ("
            f"SELECT ({probe.format(cond=first)}), 1 UNION ALL "
            f"SELECT ({probe.format(cond='partition_key > walk.k')}), walk.n + 1 "
            "FROM walk WHERE walk.k IS NOT NULL AND walk.n < :key_limit)"
        )

    def _one_key(self, cond: str) -> str:
        """The ``:per_key`` oldest undelivered rows of one key (``cond``), each with its size and eligibility."""
        return (
            f"SELECT seq, partition_key AS k, {self._size} AS size, CASE WHEN "
            f"{self._eligible} THEN 1 ELSE 0 END AS ok FROM "
            f"{self._name}{self._force('pending_key')} "
            f"WHERE {cond} ORDER BY seq LIMIT :per_key"
        )

    @staticmethod
    def _prefixes(runs_sql: str) -> str:
        """Of the rows ``runs_sql`` reads, each key's eligible prefix (in seq order)."""
        return (
            "SELECT seq, k, size FROM (SELECT seq, k, size, MIN(ok) OVER (PARTITION BY k "
            f"ORDER BY seq) AS prefix_ok FROM ({runs_sql}) AS runs"
            ") AS prefixes WHERE prefix_ok = 1"
        )

    def _runs(
        self, conn: Connection, keys: Sequence[str], run: int, base: dict[str, Any]
    ) -> dict[str, list[tuple[int, int]]]:
        """Per key, the seqs and payload sizes of the eligible prefix of its ``run`` oldest undelivered rows.

        MySQL/MariaDB and SQLite (PostgreSQL reads the runs in `_walk_step`).
        """
        params: dict[str, Any] = base | {"per_key": run}
        key_cond = (
            "pending_key = :k{index}"
            if self.kind is DialectKind.MYSQL
            else f"partition_key = :k{{index}} AND {PENDING}"
        )
        branches: list[str] = []
        for index, key in enumerate(keys):
            params[f"k{index}"] = key
            cond = key_cond.format(index=index)
            branches.append(f"SELECT * FROM ({self._one_key(cond)}) AS r{index}")
        runs_sql = " UNION ALL ".join(branches)
        runs: dict[str, list[tuple[int, int]]] = {}
        for seq, key, size in conn.execute(text(f"{self._prefixes(runs_sql)} ORDER BY seq"), params):
            runs.setdefault(str(key), []).append((int(seq), int(size)))
        return runs

    def _walk_step(
        self,
        conn: Connection,
        after: str | None,
        until: str | None,
        key_limit: int,
        run: int,
        base: dict[str, Any],
        keyless: int,
    ) -> tuple[list[str], dict[str, list[tuple[int, int]]], list[tuple[int, int]]]:
        """One step of the key walk: the next keys (as `_walk_keys`), their runs (as `_runs`), and ``keyless`` keyless candidates.

        On PostgreSQL one statement: the skip scan, one LATERAL probe per
        walked key (a plan whose size does not grow with the keys) and, when
        ``keyless`` is nonzero, the keyless lane (seq, size) as the probe
        reads it. Elsewhere the walk and the runs are two statements, and the
        keyless lane is the probe's (``keyless`` must be 0).
        """
        if self.kind is not DialectKind.POSTGRESQL:
            keys = self._walk_keys(conn, after, until, key_limit)
            return keys, (self._runs(conn, keys, run, base) if keys else {}), []
        first, bound, params = self._walk_range("partition_key", after, until)
        params |= base | {"key_limit": key_limit, "per_key": run, "batch": keyless}
        runs_sql = (
            "SELECT r.seq, r.k, r.size, r.ok FROM walk CROSS JOIN LATERAL ("
            + self._one_key(f"partition_key = walk.k AND {PENDING}")
            + ") AS r WHERE walk.k IS NOT NULL"
        )
        # Rows: (0, seq, size) keyless, (1, n, NULL) the n-th key walked,
        # (2, seq, size) a row of that key's run.
        sql = (
            f"{self._skip_scan(first, bound)} SELECT 1 AS lane, walk.k, CAST(walk.n AS bigint) AS seq, CAST(NULL AS bigint) AS size "
            "FROM walk WHERE walk.k IS NOT NULL "
            f"UNION ALL SELECT 2, k, seq, size FROM ({self._prefixes(runs_sql)}) AS prefixes"
        )
        if keyless:
            sql += (
                f" UNION ALL SELECT 0, NULL, seq, size FROM (SELECT seq, {self._size} AS size "
                f"FROM {self._name} WHERE partition_key IS NULL AND {PENDING} AND "
                f"{self._eligible} ORDER BY seq LIMIT :batch) AS keyless"
            )
        walked: list[tuple[int, str]] = []
        runs: dict[str, list[tuple[int, int]]] = {}
        free: list[tuple[int, int]] = []
        for lane, key, seq, size in conn.execute(text(sql), params):
            if lane == 1:
                walked.append((int(seq), str(key)))
            elif lane == 2:
                runs.setdefault(str(key), []).append((int(seq), int(size)))
            else:
                free.append((int(seq), int(size)))
        for run_rows in runs.values():
            run_rows.sort()
        free.sort()
        return [key for _, key in sorted(walked)], runs, free

    def _keyed_lane(
        self, conn: Connection, limit: int, base: dict[str, Any], *, keyless: bool = False
    ) -> tuple[list[tuple[int, int]], list[tuple[str, list[tuple[int, int]]]]]:
        """Keys in visiting order with their runs (seq, size), walked until the runs fill ``limit``.

        The walk starts after the cursor and wraps around once. How many keys
        it asks for at a time follows the run length seen so far, so deep keys
        cost one round trip; it never visits more than `KEYS_PER_BATCH` keys
        per message of the batch. With ``keyless`` (PostgreSQL), its first
        step also reads the keyless lane, returned first (seq, size).
        """
        run = key_run(limit)
        budget = KEYS_PER_BATCH * limit
        per_statement = budget if self.kind is DialectKind.POSTGRESQL else MAX_UNION_KEYS
        start = self.cursor.after
        after, until = start, None
        visited: list[tuple[str, list[tuple[int, int]]]] = []
        free: list[tuple[int, int]] = []
        gathered = 0
        estimate = self.cursor.run_length
        with_keyless = limit if keyless else 0
        while gathered < limit and len(visited) < budget:
            wanted = math.ceil((limit - gathered) / max(1.0, estimate))
            count = min(wanted, budget - len(visited), per_statement)
            keys, runs, found = self._walk_step(conn, after, until, count, run, base, with_keyless)
            free, with_keyless = free + found, 0
            if keys:
                visited.extend((key, runs.get(key, [])) for key in keys)
                gathered += sum(len(r) for r in runs.values())
                estimate = gathered / len(visited)
                after = keys[-1]
            if len(keys) < count:  # this part of the key space is walked
                if until is not None or start is None:
                    break
                after, until = None, start  # wrap around, up to where we began
        if visited:
            self.cursor.run_length = min(float(run), max(1.0, estimate))
        return free, visited

    def _advance(
        self, visited: Sequence[tuple[str, Sequence[tuple[int, int]]]], chosen: set[int]
    ) -> None:
        """Move the cursor past the keys this claim finished with.

        A key is finished when its whole run was taken or it had none (its
        head is held elsewhere or waits); the next claim starts after the last
        finished key, so keys the batch had no room for come first next time.
        """
        for key, run in visited:
            if not chosen.issuperset(seq for seq, _ in run):
                break
            self.cursor.after = key

    def claim_needs_transaction(self) -> bool:
        """Whether `claim` must run inside a transaction; on PostgreSQL each of its statements stands alone."""
        return self.kind is not DialectKind.POSTGRESQL

    def claims_keyless_first(self) -> bool:
        """Whether the next claim is `claim_keyless`, one statement outside a transaction.

        On PostgreSQL while the last claim saw no keyed message pending; any
        other claim is `claim`, inside one transaction.
        """
        return self.kind is DialectKind.POSTGRESQL and not self.cursor.keyed_pending

    def claim_keyless(
        self, conn: Connection, limit: int, max_retry: int
    ) -> tuple[list[OutboxMessage], int]:
        """Claim up to ``limit`` keyless messages in one statement; return them and the room left.

        The room left is what a `claim` (given these messages as ``held``)
        should fill next in the same batch: nonzero only when a keyed message
        turned out to be pending and the byte budget is not spent.
        """
        base = {"max_retry": max_retry, "owner": self.owner} | self._durations()
        stmt = text(self._keyless_claim).columns(*self._typed, column("keyed", Integer()))
        rows = conn.execute(stmt, base | {"batch": limit, "max_bytes": self.batch_max_bytes}).all()
        claimed = [row for row in rows if not row[-1]]  # the last column: keyed
        self.cursor.keyed_pending = len(claimed) < len(rows)
        spent = sum(len(row[3]) for row in claimed) >= self.batch_max_bytes
        room = limit - len(claimed) if self.cursor.keyed_pending and not spent else 0
        return self._decoded(conn, claimed), room

    def claim(
        self,
        conn: Connection,
        limit: int,
        max_retry: int,
        held: Sequence[OutboxMessage] = (),
    ) -> list[OutboxMessage]:
        """Claim up to ``limit`` messages for this owner; run inside one transaction where `claim_needs_transaction`.

        ``held`` are messages the batch already holds (`claim_keyless`'s): their
        payloads count against the byte budget, which nothing claimed here passes.
        """
        if limit <= 0:
            return []
        base = {"max_retry": max_retry, "owner": self.owner} | self._durations()
        if self.kind is DialectKind.SQLITE:
            # Take the write lock first: a deferred transaction upgrading after
            # another writer's commit fails at once instead of waiting.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            self._read_committed(conn)  # no gap locks on the scans
        if self.kind is DialectKind.SQLITE:
            # Writers are serialised (BEGIN IMMEDIATE): the choice still holds.
            chosen = self._choose(conn, limit, base, held)
            if not chosen:
                return []
            return self._decoded(conn, self._update_returning(conn, [seq for seq, _ in chosen], base))
        for _ in range(CLAIM_ATTEMPTS):
            chosen = self._choose(conn, limit, base, held)
            if not chosen:
                return []
            rows = self._lock_and_claim(conn, chosen, base)
            if rows:
                return self._decoded(conn, rows)
            # Every candidate went to a concurrent claim of another relay (they
            # walk toward the same free keys): walk on past them rather than
            # come back empty while work is left.
        return []

    def _choose(
        self,
        conn: Connection,
        limit: int,
        base: dict[str, Any],
        held: Sequence[OutboxMessage],
    ) -> list[tuple[int, str | None]]:
        """Candidates of one claim, in save order, cut to the byte budget, and the cursor moved past them."""
        visited: list[tuple[str, list[tuple[int, int]]]] = []
        if self.kind is DialectKind.POSTGRESQL:
            # The keyless lane comes with the walk's first step, whose keyed
            # probe is the walk itself: it finds no key when none waits.
            free, visited = self._keyed_lane(conn, limit, base, keyless=True)
            self.cursor.keyed_pending = bool(visited)
        else:
            # One cheap statement first: the keyless lane, plus whether any
            # keyed message is pending. An idle outbox costs this one statement
            # per poll, and a keyless-only backlog needs no key walk.
            found = conn.execute(text(self._keyless_probe), base | {"batch": limit}).all()
            free = [(int(r[0]), int(r[2])) for r in found if r[0] is not None]
            self.cursor.keyed_pending = len(free) < len(found)
            if self.cursor.keyed_pending:
                _, visited = self._keyed_lane(conn, limit, base)
        if not self.cursor.keyed_pending:
            self.cursor.after = None
        keyless: list[tuple[int, str | None, int]] = [(seq, None, size) for seq, size in free]
        runs: list[list[tuple[int, str | None, int]]] = [
            [(seq, key, size) for seq, size in run] for key, run in visited
        ]
        chosen = within_bytes(
            choose_batch(keyless, runs, limit, lambda c: c[0]),
            lambda c: c[2],
            self.batch_max_bytes - sum(len(m.payload) for m in held),
            keep_first=not held,
        )
        self._advance(visited, {seq for seq, _, _ in chosen})
        return [(seq, key) for seq, key, _ in chosen]

    def _update_returning(
        self, conn: Connection, seqs: Sequence[int], base: dict[str, Any]
    ) -> Sequence[Row[Any]]:
        stmt = self._list_param(
            text(
                f"{self._claim_set} WHERE {self._in('seq', 'seqs')} RETURNING {self._cols}"
            ),
            "seqs",
            uuid=False,
        ).columns(*self._typed)
        return conn.execute(stmt, base | {"seqs": list(seqs)}).all()

    def _lock_and_claim(
        self,
        conn: Connection,
        found: Sequence[tuple[int, str | None]],
        base: dict[str, Any],
    ) -> Sequence[Row[Any]]:
        """Lock the candidates that are still free, keep each key's prefix, claim them."""
        if self.kind is DialectKind.POSTGRESQL:
            return self._lock_and_claim_at_once(conn, found, base)
        lock = self._list_param(
            text(
                f"SELECT seq FROM {self._name}{self._force(None)} WHERE "
                f"{self._in('seq', 'seqs')} AND {PENDING} AND {self._eligible} "
                "FOR UPDATE SKIP LOCKED"
            ),
            "seqs",
            uuid=False,
        )
        lock_params = base | {"seqs": [seq for seq, _ in found]}
        locked = {int(s) for s in conn.execute(lock, lock_params).scalars()}
        accepted: list[int] = []
        blocked: set[str] = set()
        for seq, key in found:
            if key is not None and key in blocked:
                continue
            if seq in locked:
                accepted.append(seq)
            elif key is not None:
                blocked.add(key)
        if not accepted:
            return []
        # MySQL/MariaDB have no UPDATE ... RETURNING: update, then read back.
        update = self._list_param(
            text(f"{self._claim_set} WHERE {self._in('seq', 'seqs')}"), "seqs", uuid=False
        )
        conn.execute(update, base | {"seqs": accepted})
        select = self._list_param(
            text(f"SELECT {self._cols} FROM {self._name} WHERE {self._in('seq', 'seqs')}"),
            "seqs",
            uuid=False,
        ).columns(*self._typed)
        return conn.execute(select, {"seqs": accepted}).all()

    def _lock_and_claim_at_once(
        self,
        conn: Connection,
        found: Sequence[tuple[int, str | None]],
        base: dict[str, Any],
    ) -> Sequence[Row[Any]]:
        """PostgreSQL: `_lock_and_claim` in one statement, so a claim needs no transaction.

        The candidates still free are locked (eligibility checked again on
        each row's latest version); a keyed candidate is kept only when every
        earlier candidate of its key was locked too, so a key is claimed as a
        prefix of its run or not at all; the kept rows are claimed. Rows
        locked but not kept are free again when the statement ends.
        """
        stmt = text(
            "WITH candidates AS (SELECT seq, k FROM unnest(CAST(:seqs AS bigint[]), "
            "CAST(:keys AS text[])) AS c(seq, k)), "
            f"locked AS (SELECT seq FROM {self._name} WHERE seq = ANY(:seqs) AND {PENDING} "
            f"AND {self._eligible} FOR UPDATE SKIP LOCKED), "
            "kept AS (SELECT c.seq FROM candidates AS c WHERE c.seq IN (SELECT seq FROM locked) "
            "AND NOT EXISTS (SELECT 1 FROM candidates AS e WHERE e.k = c.k AND e.seq < c.seq "
            "AND e.seq NOT IN (SELECT seq FROM locked))) "
            f"{self._claim_set} WHERE seq IN (SELECT seq FROM kept) RETURNING {self._cols}"
        ).bindparams(
            bindparam("seqs", type_=postgresql.ARRAY(BigInteger())),
            bindparam("keys", type_=postgresql.ARRAY(Text())),
        ).columns(*self._typed)
        params = base | {"seqs": [seq for seq, _ in found], "keys": [key for _, key in found]}
        return conn.execute(stmt, params).all()

    def _decoded(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[OutboxMessage]:
        """Messages of the claimed rows in save order; undecodable ones are abandoned."""
        messages: list[OutboxMessage] = []
        damaged: list[dict[str, Any]] = []
        for row in sorted(rows, key=lambda r: int(r[0])):
            try:
                messages.append(self.to_message(row))
            except Exception as error:  # any decoding failure: keep it as the reason
                damaged.append(
                    {"seq": int(row[0]), "error": undecodable_reason(error)}
                )
        if damaged:
            conn.execute(
                text(
                    f"UPDATE {self._name} SET abandoned_at = {self._clock.now}, "
                    "claimed_by = NULL, lease_until = NULL, last_error = :error "
                    "WHERE seq = :seq AND claimed_by = :owner"
                ),
                [params | {"owner": self.owner} for params in damaged],
            )
        return messages

    # --------------------------------------------------------------- liveness
    def renew(self, conn: Connection, message_ids: Sequence[UUID]) -> int:
        """Push the lease of this owner's live claims among ``message_ids``; count them."""
        if not message_ids:
            return 0
        clock = self._clock
        deadline = clock.after("claim_timeout", "claimed_at")
        stmt = self._list_param(
            text(
                f"UPDATE {self._name} SET lease_until = "
                f"{clock.least}({deadline}, {clock.after('claim_lease')}) "
                f"WHERE {self._in('id', 'ids')} AND claimed_by = :owner AND {PENDING} "
                f"AND {deadline} > {clock.now}"
            ),
            "ids",
            uuid=True,
        )
        params = {"ids": list(message_ids), "owner": self.owner} | self._durations()
        return conn.execute(stmt, params).rowcount

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

    def _published(self) -> str:
        return f"published_at = {self._clock.now}, claimed_by = NULL, lease_until = NULL"

    def mark_published(self, conn: Connection, message_id: UUID) -> None:
        """Set ``published_at`` when this owner holds the message."""
        stmt = self._fenced(self._published())
        conn.execute(stmt, {"id": message_id, "owner": self.owner})

    def mark_published_many(
        self, conn: Connection, message_ids: Sequence[UUID]
    ) -> int:
        """Publish every message among ``message_ids`` this owner holds, in one statement; count them."""
        if not message_ids:
            return 0
        stmt = self._fenced(self._published(), many=True)
        return conn.execute(stmt, {"ids": list(message_ids), "owner": self.owner}).rowcount

    def increment_retry(self, conn: Connection, message_id: UUID) -> None:
        """Spend one retry and keep the claim: the message returns when it ends."""
        stmt = self._fenced("retry_count = retry_count + 1")
        conn.execute(stmt, {"id": message_id, "owner": self.owner})

    def abandon(self, conn: Connection, message_id: UUID, error: str | None) -> None:
        """Set ``abandoned_at`` (and the reason, when given) when this owner holds it."""
        assignments = (
            f"abandoned_at = {self._clock.now}, claimed_by = NULL, lease_until = NULL"
        )
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
            f"claimed_at = NULL, lease_until = NULL, not_before = {self._clock.after('delay')}"
        )
        params = {"id": message_id, "owner": self.owner, "error": error}
        conn.execute(stmt, params | self._clock.seconds("delay", delay_seconds))

    def release(self, conn: Connection, message_ids: Sequence[UUID]) -> None:
        """Drop this owner's claims on ``message_ids`` without spending retries."""
        if not message_ids:
            return
        stmt = self._fenced(
            "claimed_by = NULL, claimed_at = NULL, lease_until = NULL", many=True
        )
        conn.execute(stmt, {"ids": list(message_ids), "owner": self.owner})

    # --------------------------------------------------------- administration
    def stats(self, conn: Connection, timeout_seconds: float) -> OutboxStats:
        """Counts by state up to `count_cap` and the oldest pending age, by the database clock.

        One statement reading only index entries of undelivered, published
        and abandoned rows, each count stopping at the cap (`STATS_COUNT_CAP`),
        so it costs O(cap) whatever the table holds; the oldest pending
        message is the head of the keyless index or the oldest head of the
        keyed one (pending entries only, never a delivered row). The server
        stops it after ``timeout_seconds`` (PostgreSQL ``statement_timeout``,
        MariaDB ``max_statement_time``, MySQL ``MAX_EXECUTION_TIME``), so a
        probe that gave up leaves nothing running; SQLite runs in process.
        """
        if self.kind is DialectKind.POSTGRESQL:
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, round(timeout_seconds * 1000))}")
        row = conn.execute(self.stats_statement(timeout_seconds), {"cap": self.count_cap}).one()
        cap = self.count_cap
        heads = [t for t in (row.keyless_oldest, row.keyed_oldest) if t is not None]
        oldest: datetime | None = min(heads, default=None)
        db_now: datetime = row.db_now
        age = None if oldest is None else max(0.0, (db_now - oldest).total_seconds())
        return OutboxStats(
            pending=min(cap, int(row.keyless) + int(row.keyed)),
            claimed=min(cap, int(row.keyless_claimed) + int(row.keyed_claimed)),
            published=int(row.published),
            abandoned=int(row.abandoned),
            oldest_pending_age_seconds=age,
            count_cap=cap,
        )

    def _pending_lanes(self) -> tuple[str, str]:
        """The keyless and the keyed pending lane, each as ``<table> WHERE ... ORDER BY`` along its index."""
        name, force = self._name, self._force
        if self.kind is DialectKind.MYSQL:
            return (
                f"{name}{force('state')} WHERE {PENDING} AND partition_key IS NULL ORDER BY seq",
                f"{name}{force('pending_key')} WHERE pending_key IS NOT NULL ORDER BY pending_key, seq",
            )
        # Each lane asks for the order only its partial index gives, so
        # the planner reads that index whatever its statistics say.
        return (
            f"{name} WHERE {PENDING} AND partition_key IS NULL ORDER BY seq",
            f"{name} WHERE {PENDING} AND partition_key IS NOT NULL ORDER BY partition_key, seq",
        )

    def relay_claims(self, conn: Connection) -> list[RelayClaims]:
        """Live claims among the first `RELAY_CLAIMS_WINDOW` rows of each pending lane, grouped by owner.

        One statement; each lane reads at most the window of its index's
        entries, and the claim is judged by the database clock.
        """
        live = f"claimed_by IS NOT NULL AND lease_until > {self._clock.now}"
        lanes = " UNION ALL ".join(
            f"SELECT claimed_by, lease_until FROM (SELECT claimed_by, lease_until FROM {lane} LIMIT :window) "
            f"AS r{n} WHERE {live}"
            for n, lane in enumerate(self._pending_lanes())
        )
        stmt = text(
            f"SELECT claimed_by AS owner, COUNT(*) AS held, MAX(lease_until) AS until FROM ({lanes}) AS c "
            "GROUP BY claimed_by"
        ).columns(column("owner", Text()), column("held", Integer()), column("until", UtcDateTime()))
        rows = conn.execute(stmt, {"window": RELAY_CLAIMS_WINDOW})
        return sort_relay_claims(RelayClaims(str(r.owner), int(r.held), r.until) for r in rows)

    def stats_statement(self, timeout_seconds: float) -> TextualSelect:
        """The one `stats` statement: four capped counts, two index heads, the clock."""
        now, name, force = self._clock.now, self._name, self._force
        live = f"CASE WHEN claimed_by IS NOT NULL AND lease_until > {now} THEN 1 ELSE 0 END"
        keyless, keyed = self._pending_lanes()
        if self.kind is DialectKind.MYSQL:
            published = f"{name}{force('state')} WHERE published_at IS NOT NULL ORDER BY published_at"
            abandoned = f"{name}{force('abandoned_at')} WHERE {ABANDONED} ORDER BY abandoned_at"
            # Loose index scan of (pending_key, seq): one entry per key, no delivered row.
            keyed_head = (
                f"SELECT MIN(o.created_at) FROM (SELECT pending_key, MIN(seq) AS s FROM "
                f"{name}{force('pending_key')} WHERE pending_key IS NOT NULL "
                f"GROUP BY pending_key ORDER BY pending_key LIMIT :cap) AS heads "
                f"JOIN {name} AS o ON o.seq = heads.s"
            )
        else:
            published = f"{name} WHERE published_at IS NOT NULL ORDER BY published_at"
            abandoned = f"{name} WHERE {ABANDONED} ORDER BY abandoned_at, seq"
            # A skip scan over the keyed index: two probes per key (the next
            # key, its head), never a delivered row nor a key's whole run.
            probe = f"SELECT partition_key FROM {name} WHERE {PENDING} AND {{cond}} ORDER BY partition_key LIMIT 1"
            keyed_head = (
                "WITH RECURSIVE walk(k, n) AS ("
                f"SELECT ({probe.format(cond='partition_key IS NOT NULL')}), 1 UNION ALL "
                f"SELECT ({probe.format(cond='partition_key > walk.k')}), walk.n + 1 "
                "FROM walk WHERE walk.k IS NOT NULL AND walk.n < :cap) "
                f"SELECT MIN((SELECT created_at FROM {name} WHERE {PENDING} AND partition_key = walk.k "
                "ORDER BY partition_key, seq LIMIT 1)) FROM walk WHERE walk.k IS NOT NULL"
            )

        def lane(where: str, alias: str) -> str:
            return (
                f"(SELECT COUNT(*) AS n, COALESCE(SUM({live}), 0) AS c FROM "
                f"(SELECT claimed_by, lease_until FROM {where} LIMIT :cap) AS r) AS {alias}"
            )

        def count(where: str, alias: str) -> str:
            return f"(SELECT COUNT(*) AS n FROM (SELECT seq FROM {where} LIMIT :cap) AS r) AS {alias}"

        select = (
            "SELECT kl.n AS keyless, kl.c AS keyless_claimed, kd.n AS keyed, "
            "kd.c AS keyed_claimed, pb.n AS published, ab.n AS abandoned, "
            f"(SELECT created_at FROM {keyless} LIMIT 1) AS keyless_oldest, "
            f"({keyed_head}) AS keyed_oldest, "
            f"{now} AS db_now FROM {lane(keyless, 'kl')} CROSS JOIN {lane(keyed, 'kd')} "
            f"CROSS JOIN {count(published, 'pb')} CROSS JOIN {count(abandoned, 'ab')}"
        )
        if self.kind is DialectKind.MYSQL:
            if isinstance(self.dialect, MySQLDialect) and self.dialect.is_mariadb:
                select = f"SET STATEMENT max_statement_time = {max(0.001, timeout_seconds):.3f} FOR {select}"
            else:
                select = select.replace(
                    "SELECT ", f"SELECT /*+ MAX_EXECUTION_TIME({max(1, round(timeout_seconds * 1000))}) */ ", 1
                )
        return text(select).columns(
            column("keyless", Integer()),
            column("keyless_claimed", Integer()),
            column("keyed", Integer()),
            column("keyed_claimed", Integer()),
            column("published", Integer()),
            column("abandoned", Integer()),
            column("keyless_oldest", UtcDateTime()),
            column("keyed_oldest", UtcDateTime()),
            column("db_now", UtcDateTime()),
        )

    def list_abandoned(self, conn: Connection, limit: int) -> list[OutboxMessage]:
        """Abandoned messages, oldest abandoned first, with their last error.

        A message abandoned because it could not be decoded is listed with
        empty headers; its ``last_error`` says what was wrong.
        """
        stmt = text(
            f"SELECT {self._cols} FROM {self._name}{self._force('abandoned_at')} "
            f"WHERE {ABANDONED} ORDER BY abandoned_at, seq LIMIT :limit"
        ).columns(*self._typed)
        messages: list[OutboxMessage] = []
        for row in conn.execute(stmt, {"limit": limit}):
            try:
                messages.append(self.to_message(row))
            except ValueError:
                messages.append(self.to_message(row, headers={}))
        return messages

    def key_heads(self, conn: Connection, limit: int, after: UUID | None) -> list[KeyHead]:
        """The heads of up to ``limit`` keys, oldest first, after the head ``after``, with their claim and retry time.

        The heads are those of the first `KEY_HEADS_WINDOW` keys in key order,
        each found with two index probes (a skip scan of the keyed index;
        MySQL/MariaDB: a loose index scan of ``pending_key``), so one call
        costs O(window) whatever the table holds; claim and retry time are
        judged by the database clock.
        """
        name = self._name
        if self.kind is DialectKind.MYSQL:
            heads = (
                f"SELECT MIN(seq) AS s FROM {name}{self._force('pending_key')} "
                "WHERE pending_key IS NOT NULL GROUP BY pending_key ORDER BY pending_key LIMIT :window"
            )
        else:
            probe = f"SELECT partition_key FROM {name} WHERE {PENDING} AND {{cond}} ORDER BY partition_key LIMIT 1"
            heads = (
                "WITH RECURSIVE walk(k, n) AS ("
                f"SELECT ({probe.format(cond='partition_key IS NOT NULL')}), 1 UNION ALL "
                f"SELECT ({probe.format(cond='partition_key > walk.k')}), walk.n + 1 "
                "FROM walk WHERE walk.k IS NOT NULL AND walk.n < :window) "
                f"SELECT (SELECT seq FROM {name} WHERE {PENDING} AND partition_key = walk.k "
                "ORDER BY partition_key, seq LIMIT 1) AS s FROM walk WHERE walk.k IS NOT NULL"
            )
        stmt = self._held(
            f"FROM ({heads}) AS heads JOIN {name} AS o ON o.seq = heads.s "
            f"WHERE o.seq > COALESCE((SELECT seq FROM {name} WHERE id = :id), 0) ORDER BY o.seq LIMIT :limit"
        )
        params = {"window": KEY_HEADS_WINDOW, "limit": max(0, limit), "id": after}
        return [self._detail(KeyHead, row) for row in conn.execute(stmt, params)]

    def get_message(self, conn: Connection, message_id: UUID) -> MessageDetail | None:
        """One message in whatever state, with its claim and retry time; None when no row has that id.

        One probe of the primary key.
        """
        row = conn.execute(self._held(f"FROM {self._name} AS o WHERE o.id = :id"), {"id": message_id}).first()
        return None if row is None else self._detail(MessageDetail, row)

    def _held(self, rest: str) -> TextualSelect:
        """``SELECT`` the message columns of rows ``o`` and what holds each now, then ``rest``.

        The live claim (owner, end) and the retry time are judged by the
        database clock; nothing holds a published or abandoned row.
        """
        now = self._clock.now
        pending = "o.published_at IS NULL AND o.abandoned_at IS NULL"
        live = f"{pending} AND o.claimed_by IS NOT NULL AND o.lease_until > {now}"
        return self._id_param(text(
            f"SELECT {self._cols}, CASE WHEN {live} THEN o.claimed_by END AS live_owner, "
            f"CASE WHEN {live} THEN o.lease_until END AS live_until, "
            f"CASE WHEN {pending} AND o.not_before > {now} THEN o.not_before END AS due {rest}"
        )).columns(*self._typed, column("live_owner", Text()), column("live_until", UtcDateTime()),
                  column("due", UtcDateTime()))

    def _detail[D: MessageDetail](self, kind: type[D], row: Row[Any]) -> D:
        """A row of `_held` as ``kind``; a row whose headers cannot be decoded keeps empty headers."""
        try:
            message = self.to_message(row)
        except ValueError:
            message = self.to_message(row, headers={})
        return kind(message, row.live_owner, row.live_until, row.due)

    def _read_committed(self, conn: Connection) -> None:
        """MySQL/MariaDB: READ COMMITTED for this transaction (run it first): no gap locks."""
        if self.kind is DialectKind.MYSQL:
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")

    def _by_seq(
        self, conn: Connection, choose: TextClause, params: dict[str, Any], change: str
    ) -> int:
        """Run ``change`` (an UPDATE or DELETE ending in WHERE) on the rows ``choose`` reads.

        MySQL/MariaDB administration: READ COMMITTED, rows read without locks,
        then changed by primary key, so only those rows are locked.
        """
        self._read_committed(conn)
        seqs = [int(seq) for seq in conn.execute(choose, params).scalars()]
        if not seqs:
            return 0
        stmt = self._list_param(text(f"{change} {self._in('seq', 'seqs')}"), "seqs", uuid=False)
        return conn.execute(stmt, {"seqs": seqs}).rowcount

    def requeue_abandoned(
        self, conn: Connection, message_ids: Sequence[UUID] | None, limit: int
    ) -> int:
        """Make up to ``limit`` abandoned messages pending with a fresh retry budget.

        Oldest abandoned first; the ``abandoned_at`` index bounds the cost by
        ``limit`` whatever the number of abandoned messages. It never holds up
        a business save: on MySQL/MariaDB it reads the rows without locking
        them and updates them by primary key at READ COMMITTED, so it locks
        only those rows (a ranged UPDATE at REPEATABLE READ next-key locked the
        index gap every new row's entry goes into).
        """
        if limit <= 0 or (message_ids is not None and not message_ids):
            return 0
        where = ABANDONED
        params: dict[str, Any] = {"limit": limit}
        if message_ids is not None:
            where += f" AND {self._in('id', 'ids')}"
            params["ids"] = list(message_ids)
        assignments = (
            "abandoned_at = NULL, retry_count = 0, claimed_at = NULL, "
            "claimed_by = NULL, not_before = NULL, lease_until = NULL"
        )
        # The abandoned condition again on the rows updated: a concurrent
        # requeue of the same rows must not reset a claim taken in between.
        if self.kind is DialectKind.MYSQL:
            # Named ids go through the id index, the oldest through abandoned_at.
            hint = self._force("abandoned_at") if message_ids is None else ""
            choose = text(
                f"SELECT seq FROM {self._name}{hint} WHERE {where} "
                "ORDER BY abandoned_at, seq LIMIT :limit"
            )
            if message_ids is not None:
                choose = self._list_param(choose, "ids", uuid=True)
            change = f"UPDATE {self._name} SET {assignments} WHERE {ABANDONED} AND"
            return self._by_seq(conn, choose, params, change)
        stmt = text(
            f"UPDATE {self._name} SET {assignments} WHERE {ABANDONED} AND seq IN "
            f"(SELECT seq FROM {self._name} WHERE {where} "
            "ORDER BY abandoned_at, seq LIMIT :limit)"
        )
        if message_ids is not None:
            stmt = self._list_param(stmt, "ids", uuid=True)
        return conn.execute(stmt, params).rowcount

    def purge_published(self, conn: Connection, before: datetime | timedelta, limit: int) -> int:
        """Delete up to ``limit`` messages published before ``before``.

        An age is measured on the database clock (as leases are), so a relay
        whose clock runs ahead purges nothing younger than its retention.
        On MySQL/MariaDB the rows are chosen without locks and deleted by
        primary key at READ COMMITTED, like `requeue_abandoned`, so a purge
        never holds up a business save.
        """
        if limit <= 0:
            return 0
        params: dict[str, Any] = {"limit": limit}
        if isinstance(before, timedelta):
            cutoff = self._clock.ago("age")
            params |= self._clock.seconds("age", before.total_seconds(), back=True)
            binds: list[BindParameter[Any]] = []
        else:
            cutoff = ":before"
            params["before"] = before
            binds = [bindparam("before", type_=UtcDateTime())]
        if self.kind is DialectKind.MYSQL:
            choose = text(
                f"SELECT seq FROM {self._name}{self._force('state')} "
                f"WHERE published_at < {cutoff} ORDER BY published_at LIMIT :limit"
            ).bindparams(*binds)
            change = f"DELETE FROM {self._name} WHERE published_at IS NOT NULL AND"
            return self._by_seq(conn, choose, params, change)
        sql = (
            f"DELETE FROM {self._name} WHERE seq IN (SELECT seq FROM {self._name} "
            f"WHERE published_at < {cutoff} ORDER BY published_at LIMIT :limit)"
        )
        return conn.execute(text(sql).bindparams(*binds), params).rowcount
