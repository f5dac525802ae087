"""Claim and stats plans whatever the statistics say: no statement of a claim or a stats read scans the table.

Each case loads a table whose statistics mislead the planner the way real
ones did (a fresh backlog on top of delivered rows, analysed or not; a
drained backlog the statistics still count) and explains every statement one
claim (or one ``stats()`` read) runs. The sizes are the smallest that showed
the bad plans here; the 1M-row figures are in ``benchmarks/stats_cost.py``
for ``stats()``.
"""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from spakky.plugins.outbox_sqlalchemy.operations import WALK_EXAMINED, OutboxSql
from spakky.plugins.outbox_sqlalchemy.schema import (
    create_outbox_table,
    drop_outbox_table,
)
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

DELIVERED = 50_000
"""Published rows under the backlog (MariaDB planned along the primary key from here on)."""
BACKLOG = DELIVERED // 10
"""Pending rows of a fresh backlog: the 10% of changes that make InnoDB refresh its statistics."""
BATCH = 100


@dataclass
class _Table:
    engine: Engine
    name: str
    sql: OutboxSql

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def run(self, *statements: str, **params: Any) -> None:
        with self.engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement), params)

    def insert(self, count: int, *, published: bool) -> None:
        """``count`` rows, half of them on 100 keys; published or pending."""
        published_at = "CURRENT_TIMESTAMP" if published else "NULL"
        if self.postgres:
            numbers = "generate_series(1, :count) AS n(i)"
            new_id, key = "gen_random_uuid()", "'k' || (i % 100)"
        else:  # digits crossed: no sequence engine or recursion limit needed
            digit = "(SELECT 0 AS d UNION ALL " + " UNION ALL ".join(f"SELECT {d}" for d in range(1, 10)) + ")"
            numbers = (
                f"(SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 1 AS i FROM "
                f"{digit} a CROSS JOIN {digit} b CROSS JOIN {digit} c CROSS JOIN {digit} e "
                f"CROSS JOIN {digit} f) AS n WHERE i <= :count"
            )
            new_id, key = "REPLACE(UUID(), '-', '')", "CONCAT('k', i % 100)"
        self.run(
            f"INSERT INTO {self.name} (id, event_name, payload, headers, partition_key, "
            "created_at, published_at, retry_count) "
            f"SELECT {new_id}, 'OrderPlaced', 'x', '{{}}', CASE WHEN i % 2 = 0 THEN {key} END, "
            f"CURRENT_TIMESTAMP, {published_at}, 0 FROM {numbers}",
            count=count,
        )

    def analyze(self) -> None:
        self.run(f"ANALYZE {self.name}" if self.postgres else f"ANALYZE TABLE {self.name}")

    def claim_statements(self, *, everything: bool = False) -> list[tuple[str, Any]]:
        """The reads one claim runs (``everything``: its writes too), with their parameters (rolled back)."""
        captured: list[tuple[str, Any]] = []

        def capture(_c: object, _cursor: object, statement: str, parameters: Any, *_: object) -> None:
            captured.append((statement, parameters))

        with self.engine.connect() as connection:
            event.listen(connection, "before_cursor_execute", capture)
            with connection.begin() as transaction:
                self.sql.claim(connection, BATCH, 5)
                transaction.rollback()
            event.remove(connection, "before_cursor_execute", capture)
        kinds = ("SELECT", "WITH", "UPDATE") if everything else ("SELECT", "WITH")
        return [(s, p) for s, p in captured if s.lstrip().upper().startswith(kinds)]

    def stats_statements(self, timeout_seconds: float = 5.0) -> list[tuple[str, Any]]:
        """The statements one ``stats()`` read runs, with their parameters."""
        captured: list[tuple[str, Any]] = []

        def capture(_c: object, _cursor: object, statement: str, parameters: Any, *_: object) -> None:
            captured.append((statement, parameters))

        with self.engine.connect() as connection:
            event.listen(connection, "before_cursor_execute", capture)
            with connection.begin():
                self.sql.stats(connection, timeout_seconds)
            event.remove(connection, "before_cursor_execute", capture)
        return captured

    def full_scans(self, connection: Connection, statement: str, params: Any) -> list[str]:
        """Accesses to the outbox table that read all of it (or all of one index)."""
        if self.postgres:
            plan = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar_one()
            nodes = plan if isinstance(plan, list) else json.loads(plan)
            return [
                f"{node['Node Type']} on {node['Relation Name']}"
                for node in _nodes(nodes[0]["Plan"])
                if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == self.name
            ]
        rows = connection.exec_driver_sql("EXPLAIN " + statement, params).mappings().all()
        return [
            f"type={row['type']} key={row['key']} rows={row['rows']}"
            for row in rows
            if row["table"] == self.name and row["type"] in ("ALL", "index")
        ]


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


@pytest.fixture(params=["postgres", "mariadb"])
def table(request: pytest.FixtureRequest) -> Iterator[_Table]:
    """An empty outbox table whose statistics only change when a test says so."""
    base = make_url(request.getfixturevalue(f"{request.param}_url"))
    driver = "postgresql+psycopg" if request.param == "postgres" else "mysql+pymysql"
    engine = create_engine(base.set(drivername=driver))
    name = f"plans_{uuid.uuid4().hex[:12]}"
    sql = OutboxSql(
        table=create_outbox_table(engine, name),
        dialect=engine.dialect,
        owner=uuid.uuid4().hex,
        claim_timeout_seconds=300.0,
        claim_lease_seconds=30.0,
    )
    made = _Table(engine, name, sql)
    made.run(
        f"ALTER TABLE {name} SET (autovacuum_enabled = false)"
        if made.postgres
        else f"ALTER TABLE {name} STATS_AUTO_RECALC = 0"
    )
    yield made
    drop_outbox_table(engine, name)
    engine.dispose()


def _full_scans(table: _Table, statements: list[tuple[str, Any]]) -> dict[str, list[str]]:
    """The statements (their first 160 characters) that read a whole table or index, with what they read."""
    with table.engine.connect() as connection:
        return {
            statement[:160]: scans
            for statement, params in statements
            if (scans := table.full_scans(connection, statement, params))
        }


def _assert_no_full_scan(table: _Table) -> None:
    statements = table.claim_statements()
    assert statements, "the claim ran no SELECT"
    found = _full_scans(table, statements)
    assert not found, f"claim statements read the whole table: {found}"


def _fresh_backlog(table: _Table, *, analyzed: bool) -> None:
    """Delivered rows, then a backlog the statistics count (ANALYZE after it) or have not seen yet (ANALYZE before)."""
    table.insert(DELIVERED, published=True)
    if not analyzed:
        table.analyze()
    table.insert(BACKLOG, published=False)
    if analyzed:
        table.analyze()


FRESH_BACKLOG = pytest.mark.parametrize("analyzed", [False, True], ids=["statistics_from_before", "analyzed"])
"""A fresh backlog both ways: statistics from before it (no ANALYZE since), or counting it (InnoDB refreshes them at 10% changed)."""


@FRESH_BACKLOG
def test_claim_fresh_backlog_expect_no_full_scan(table: _Table, analyzed: bool) -> None:
    """A fresh backlog is claimed along the indexes, whether the statistics have seen it or not."""
    _fresh_backlog(table, analyzed=analyzed)
    _assert_no_full_scan(table)


def test_claim_empty_after_drain_statistics_still_pending_expect_no_full_scan(table: _Table) -> None:
    """An empty claim after a drain the statistics missed (they say all pending) reads no table."""
    table.insert(DELIVERED, published=False)
    table.analyze()
    table.run(f"UPDATE {table.name} SET published_at = CURRENT_TIMESTAMP")
    _assert_no_full_scan(table)


def _jit_compiled(table: _Table) -> dict[str, float]:
    """Claim statements whose estimated cost would make PostgreSQL JIT-compile them, with the cost.

    A claim sets no ``jit = off`` (it would cost a round trip, and it runs
    outside a transaction): each statement must plan below ``jit_above_cost``.
    """
    found: dict[str, float] = {}
    with table.engine.connect() as connection:
        threshold = float(connection.exec_driver_sql("SELECT current_setting('jit_above_cost')").scalar_one())
        for statement, params in table.claim_statements(everything=True):
            plan = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar_one()
            nodes = plan if isinstance(plan, list) else json.loads(plan)
            cost = float(nodes[0]["Plan"]["Total Cost"])
            if threshold >= 0 and cost > threshold:
                found[statement[:160]] = cost
    return found


def test_claim_keyed_backlog_expect_no_statement_jit_compiled(table: _Table) -> None:
    """Every statement of a keyed claim plans below PostgreSQL's JIT threshold, before and after ANALYZE."""
    if not table.postgres:
        pytest.skip("JIT compilation is PostgreSQL's")
    _fresh_backlog(table, analyzed=False)
    assert not _jit_compiled(table), "statistics from before the backlog"
    table.analyze()
    assert not (found := _jit_compiled(table)), f"analysed backlog: {found}"


def _assert_stats_no_full_scan(table: _Table) -> None:
    statements = table.stats_statements()
    selects = [
        (statement.split(" FOR ", 1)[1] if statement.startswith("SET STATEMENT") else statement, params)
        for statement, params in statements
        if not statement.startswith("SET LOCAL")
    ]
    assert len(selects) == 1, f"stats ran {len(selects)} reads, expected one statement: {selects}"
    found = _full_scans(table, selects)
    assert not found, f"the stats statement reads the whole table (or a whole index): {found}"


@FRESH_BACKLOG
def test_stats_fresh_backlog_expect_no_full_scan(table: _Table, analyzed: bool) -> None:
    """A stats read over delivered rows and a backlog reads index entries only, never the table, whatever the statistics saw."""
    _fresh_backlog(table, analyzed=analyzed)
    _assert_stats_no_full_scan(table)


def test_stats_counts_past_cap_expect_stopped_at_cap(table: _Table) -> None:
    """Counts stop at the cap and say so; the oldest pending age still comes from the oldest head."""
    table.sql.count_cap = 100
    # An hour ago: a backlog of which only key k42 is left (its head stuck); then a fresh one.
    table.insert(BACKLOG, published=False)
    table.run(
        f"UPDATE {table.name} SET created_at = CURRENT_TIMESTAMP - INTERVAL '1' HOUR",
        f"UPDATE {table.name} SET published_at = CURRENT_TIMESTAMP "
        "WHERE partition_key IS NULL OR partition_key <> 'k42'",
    )
    table.insert(BACKLOG, published=False)
    with table.engine.connect() as connection, connection.begin():
        stats = table.sql.stats(connection, 5.0)
    assert (stats.pending, stats.published, stats.abandoned, stats.count_cap) == (100, 100, 0, 100)
    assert stats.capped == ("pending", "claimed", "published"), stats
    assert stats.shown("pending") == "100+" and stats.shown("abandoned") == "0"
    age = stats.oldest_pending_age_seconds
    assert age is not None and age >= 3000, f"the oldest head (key k42, an hour old) was missed: {age}"


def test_stats_timeout_expect_server_side_limit(table: _Table) -> None:
    """The read carries the caller's timeout to the server, which stops it there."""
    statements = [statement for statement, _ in table.stats_statements(timeout_seconds=1.5)]
    if table.postgres:
        assert statements[0] == "SET LOCAL statement_timeout = 1500", statements
    else:
        assert statements[0].startswith("SET STATEMENT max_statement_time = 1.500 FOR SELECT"), statements


def _index_entries_read(connection: Connection) -> int:
    """Index entries this MariaDB session has read in index order so far (``Handler_read_next`` and ``_prev``).

    These count what a range or index scan walks past; the other counters also
    count lookups in the claim's own temporary tables (its GROUP BY and
    window functions), and a scan of the table is what the plan tests catch.
    """
    rows = connection.execute(text("SHOW SESSION STATUS LIKE 'Handler_read%'")).all()
    connection.commit()  # end the autobegun transaction: the claim opens its own
    return sum(int(value) for name, value in rows if str(name).lower() in ("handler_read_next", "handler_read_prev"))


DEEP_KEYS = 5
"""Keys of the deep-key backlog: ``DELIVERED`` pending keyed messages over them, 10,000 each."""


@pytest.mark.parametrize("table", ["mariadb"], indirect=True)
def test_claim_deep_keys_expect_key_walk_reads_bounded_not_every_walked_keys_depth(table: _Table) -> None:
    """Five keys 10,000 deep: one claim reads the walk's bounded share of the index, not the 50,000 entries of its keys.

    MariaDB uses no loose index scan for a ``SELECT DISTINCT`` over the key
    index, so the walk read every entry of each key it passed (here all
    50,000), however few messages the claim takes from each.
    """
    table.insert(2 * DELIVERED, published=False)  # half keyless, half keyed
    table.run(
        f"UPDATE {table.name} SET partition_key = CONCAT('k', seq % {DEEP_KEYS}) "
        "WHERE partition_key IS NOT NULL"
    )
    table.analyze()
    with table.engine.connect() as connection:
        before = _index_entries_read(connection)
        with connection.begin() as transaction:
            claimed = table.sql.claim(connection, BATCH, 5)
            transaction.rollback()
        read = _index_entries_read(connection) - before
    assert len(claimed) == BATCH
    bound = WALK_EXAMINED + 10 * BATCH  # the bounded walk, one entry per probe, the runs, the keyless lane, the lock
    assert read < bound, f"one claim of {BATCH} read {read:,} index entries (bound {bound:,})"
