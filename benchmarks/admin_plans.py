"""The plans of the claim and administration statements at 1M+ rows, and a save beside an open requeue.

Issue 17 items 2 and 9: a claim must stay O(batch) whatever the statistics say,
and ``requeue`` / ``purge`` must never hold up a business save (on
MySQL/MariaDB a ranged UPDATE at REPEATABLE READ next-key locked the gap every
new row goes into). For each of PostgreSQL and MariaDB this loads one table of
``--delivered`` published rows under a fresh ``--backlog`` of pending ones
(half on 100 keys, 1% abandoned; `benchmarks.stats_cost.load`), analysed, then
runs each operation through the storage's own SQL (`OutboxSql`), capturing
every statement it sends: the plan of each (PostgreSQL: EXPLAIN ANALYZE in a
rolled-back transaction; MariaDB: EXPLAIN), the median time of the operation,
and how long a business INSERT waits while a requeue's transaction is open.

With ``--statistics`` it shows instead what issue 17 item 2 asks of the
claims at that size: one table whose statistics mislead the planner the three
ways real ones did (automatic statistics off, so only the script's ANALYZE
counts): a fresh backlog the statistics have not seen (ANALYZE ran before it
arrived), the same backlog analysed, and an empty claim after a drain the
statistics missed (they still count the backlog as pending: PostgreSQL's
empty claim was a Seq Scan until ANALYZE ran). Each claim statement is
explained (PostgreSQL: EXPLAIN ANALYZE, actual rows and buffers; MariaDB:
ANALYZE, estimated and actual rows) and timed.

Usage (from the workspace root; a few minutes at the defaults)::

    .venv/bin/python -m benchmarks.admin_plans
    .venv/bin/python -m benchmarks.admin_plans --delivered 200000 --backlog 20000 --only mariadb
    .venv/bin/python -m benchmarks.admin_plans --statistics

Nothing here asserts on timings: the script measures and prints.
"""

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from spakky.plugins.outbox_sqlalchemy.operations import OutboxSql
from spakky.plugins.outbox_sqlalchemy.schema import (
    create_outbox_table,
    drop_outbox_table,
)
from sqlalchemy import Connection, Engine, create_engine, event, text

from benchmarks.stats_cost import URLS, insert_rows, loaded_table

MAX_RETRY = 10


def operations(sql: OutboxSql) -> dict[str, Callable[[Connection], Any]]:
    """Each operation measured, as the storage runs it (one transaction each)."""
    return {
        "claim 100": lambda c: sql.claim(c, 100, MAX_RETRY),
        "list_abandoned 100": lambda c: sql.list_abandoned(c, 100),
        "requeue_abandoned 1000": lambda c: sql.requeue_abandoned(c, None, 1000),
        "purge_published 1000": lambda c: sql.purge_published(c, datetime.now(UTC) + timedelta(hours=1), 1000),
    }


def captured(engine: Engine, run: Callable[[], Any]) -> list[tuple[str, Any]]:
    """The statements (with their driver parameters) ``run`` sends, SET and transaction control left out."""
    seen: list[tuple[str, Any]] = []

    def listen(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        head = statement.lstrip().split(None, 1)[0].upper()
        if head in {"SELECT", "UPDATE", "DELETE", "WITH"}:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    return seen


def explain(engine: Engine, statement: str, parameters: Any, postgres: bool) -> list[str]:
    """The plan of one captured statement; nothing it would change is kept."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if postgres:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            lines = [str(row[0]) for row in cursor.fetchall()]
        else:
            if statement.lstrip().upper().startswith("SET STATEMENT"):
                statement = statement.split(" FOR ", 1)[1]
            # ANALYZE runs the statement (rolled back below) and adds the rows it really read.
            cursor.execute("ANALYZE " + statement, parameters)
            names = [d[0] for d in cursor.description]
            lines = []
            for row in cursor.fetchall():
                r = dict(zip(names, row, strict=True))
                lines.append(
                    f"{r['select_type']:<12} table={r['table']} type={r['type']} key={r['key']} "
                    f"rows={r['rows']} r_rows={r.get('r_rows')} extra={r['Extra']}"
                )
        raw.rollback()
        return lines
    finally:
        raw.close()


def timed_rolled_back(engine: Engine, operation: Callable[[Connection], Any], runs: int) -> list[float]:
    """Milliseconds of ``runs`` calls of ``operation``, each in a transaction rolled back."""
    times: list[float] = []
    for _ in range(runs):
        with engine.connect() as connection:
            started = time.perf_counter()
            with connection.begin() as transaction:
                operation(connection)
                times.append((time.perf_counter() - started) * 1000)
                transaction.rollback()
    return times


def save_beside_open_requeue(engine: Engine, sql: OutboxSql, name: str) -> float:
    """Milliseconds a business INSERT takes while a requeue of 1000 holds its transaction open."""
    requeued = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with engine.connect() as connection, connection.begin() as transaction:
            sql.requeue_abandoned(connection, None, 1000)
            requeued.set()
            release.wait(30)
            transaction.rollback()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        if not requeued.wait(60):
            raise RuntimeError("the requeue did not finish in 60 s")
        with engine.connect() as connection:
            started = time.perf_counter()
            with connection.begin():
                connection.execute(
                    text(
                        f"INSERT INTO {name} (id, event_name, payload, headers, created_at, retry_count) "
                        "VALUES (:id, 'OrderPlaced', 'x', '{}', CURRENT_TIMESTAMP, 0)"
                    ),
                    {"id": uuid.uuid4().hex if engine.dialect.name != "postgresql" else str(uuid.uuid4())},
                )
            return (time.perf_counter() - started) * 1000
    finally:
        release.set()
        holder.join()


def section(kind: str, delivered: int, backlog: int, runs: int) -> None:
    """Load one table on ``kind``, then plan, time and print every operation."""
    postgres = kind == "postgres"
    with loaded_table(kind, "admin_plans", delivered, backlog) as (engine, sql, name):
        for label, operation in operations(sql).items():
            report_operation(engine, f"[{kind}] {label}", operation, runs, postgres)
        waited = save_beside_open_requeue(engine, sql, name)
        print(f"\n[{kind}] a business INSERT while a requeue of 1000 holds its transaction open: {waited:.1f} ms")


def report_operation(
    engine: Engine, heading: str, operation: Callable[[Connection], Any], runs: int, postgres: bool
) -> None:
    """Time ``operation`` (rolled back each run), then print every statement it sent with its plan."""

    def once() -> None:
        with engine.connect() as connection, connection.begin() as transaction:
            operation(connection)
            transaction.rollback()

    statements = captured(engine, once)
    times = timed_rolled_back(engine, operation, runs)
    print(f"\n=== {heading}: median {statistics.median(times):.1f} ms, max {max(times):.1f} ms "
          f"over {runs} runs; {len(statements)} statement(s) ===")
    for statement, parameters in statements:
        print("-- " + " ".join(statement.split())[:160])
        print("\n".join("   " + line for line in explain(engine, statement, parameters, postgres)))


def claim_plans(kind: str, engine: Engine, sql: OutboxSql, state: str, runs: int) -> None:
    """Explain and time every statement one claim of 100 sends (PostgreSQL: both claim paths)."""
    postgres = engine.dialect.name == "postgresql"
    claims: dict[str, Callable[[Connection], Any]] = {"claim 100": lambda c: sql.claim(c, 100, MAX_RETRY)}
    if postgres:  # the storage's claim while no keyed message was pending at its last claim
        claims["claim_keyless 100"] = lambda c: sql.claim_keyless(c, 100, MAX_RETRY)
    for label, operation in claims.items():
        report_operation(engine, f"[{kind}] {state}: {label}", operation, runs, postgres)


def statistics_section(kind: str, delivered: int, backlog: int, runs: int) -> None:
    """Claims on one table under the three misleading statistics (issue 17 item 2), at ``delivered`` + ``backlog``."""
    postgres = kind == "postgres"
    engine = create_engine(URLS[kind])
    name = f"claim_stats_{uuid.uuid4().hex[:8]}"
    sql = OutboxSql(
        table=create_outbox_table(engine, name),
        dialect=engine.dialect,
        owner=uuid.uuid4().hex,
        claim_timeout_seconds=300.0,
        claim_lease_seconds=30.0,
    )
    analyse = f"ANALYZE {name}" if postgres else f"ANALYZE TABLE {name}"

    def run(*statements: str) -> None:
        with engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)

    def insert(count: int, *, published: bool) -> None:
        with engine.begin() as connection:
            for start in range(0, count, 200_000):
                insert_rows(connection, name, min(200_000, count - start), published=published, postgres=postgres)

    try:
        # Only this script's ANALYZE may change the statistics (no autovacuum, no InnoDB auto-recalc).
        run(f"ALTER TABLE {name} SET (autovacuum_enabled = false)" if postgres
            else f"ALTER TABLE {name} STATS_AUTO_RECALC = 0")
        started = time.perf_counter()
        insert(delivered, published=True)
        run(analyse)
        insert(backlog, published=False)
        print(f"\n[{kind}] {delivered:,} published (analysed) + {backlog:,} fresh pending (half on 100 keys) "
              f"loaded in {time.perf_counter() - started:.0f} s")
        claim_plans(kind, engine, sql, "fresh backlog, statistics from before it", runs)
        run(analyse)
        claim_plans(kind, engine, sql, "fresh backlog, analysed", runs)
        started = time.perf_counter()
        run(f"UPDATE {name} SET published_at = CURRENT_TIMESTAMP WHERE published_at IS NULL")
        print(f"\n[{kind}] backlog drained (published) in {time.perf_counter() - started:.0f} s, not analysed: "
              f"the statistics still count {backlog:,} pending")
        claim_plans(kind, engine, sql, "empty claim after a drain the statistics missed", runs)
    finally:
        drop_outbox_table(engine, name)
        engine.dispose()


def main() -> None:
    """Parse the sizes and run each database's section."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delivered", type=int, default=1_200_000)
    parser.add_argument("--backlog", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="postgres,mariadb")
    parser.add_argument("--statistics", action="store_true", help="claims under misleading statistics instead")
    args = parser.parse_args()
    for kind in args.only.split(","):
        (statistics_section if args.statistics else section)(kind, args.delivered, args.backlog, args.runs)


if __name__ == "__main__":
    main()
