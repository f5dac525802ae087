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

Usage (from the workspace root; a few minutes at the defaults)::

    .venv/bin/python -m benchmarks.admin_plans
    .venv/bin/python -m benchmarks.admin_plans --delivered 200000 --backlog 20000 --only mariadb

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
from sqlalchemy import Connection, Engine, event, text

from benchmarks.stats_cost import loaded_table

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
            cursor.execute("EXPLAIN " + statement, parameters)
            names = [d[0] for d in cursor.description]
            lines = []
            for row in cursor.fetchall():
                r = dict(zip(names, row, strict=True))
                lines.append(
                    f"{r['select_type']:<12} table={r['table']} type={r['type']} key={r['key']} "
                    f"rows={r['rows']} extra={r['Extra']}"
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

            def once(operation: Callable[[Connection], Any] = operation) -> None:
                with engine.connect() as connection, connection.begin() as transaction:
                    operation(connection)
                    transaction.rollback()

            statements = captured(engine, once)
            times = timed_rolled_back(engine, operation, runs)
            print(f"\n=== [{kind}] {label}: median {statistics.median(times):.1f} ms, max {max(times):.1f} ms "
                  f"over {runs} runs; {len(statements)} statement(s) ===")
            for statement, parameters in statements:
                print("-- " + " ".join(statement.split())[:160])
                print("\n".join("   " + line for line in explain(engine, statement, parameters, postgres)))
        waited = save_beside_open_requeue(engine, sql, name)
        print(f"\n[{kind}] a business INSERT while a requeue of 1000 holds its transaction open: {waited:.1f} ms")


def main() -> None:
    """Parse the sizes and run each database's section."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delivered", type=int, default=1_200_000)
    parser.add_argument("--backlog", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="postgres,mariadb")
    args = parser.parse_args()
    for kind in args.only.split(","):
        section(kind, args.delivered, args.backlog, args.runs)


if __name__ == "__main__":
    main()
