"""What one ``stats()`` read costs at 1M+ rows: the full scan it was beside the capped read it is.

``stats()`` runs on every health probe, every metrics scrape and for the
``status`` command. It was one aggregate over the whole table (PostgreSQL:
Parallel Seq Scan; MariaDB: a full scan), so its cost grew with the
delivered rows kept; now it reads only index entries of undelivered,
published and abandoned rows, each count stopping at `STATS_COUNT_CAP`.

For each of PostgreSQL and MariaDB this loads one table of ``--delivered``
published rows under a fresh ``--backlog`` of pending ones (half of them on
100 keys, 1% abandoned), analysed, and prints for the previous statement and
the current one: the plan (EXPLAIN), the median and max of ``--runs`` timed
reads, and what each returned. Then it shows the server-side timeout: the
previous full scan under the current ``statement_timeout`` /
``max_statement_time`` of 50 ms is stopped by the server.

Usage (from the workspace root; about 3 minutes at the defaults)::

    .venv/bin/python -m benchmarks.stats_cost
    .venv/bin/python -m benchmarks.stats_cost --delivered 200000 --backlog 20000 --only postgres

Nothing here asserts on timings: the script measures and prints.
"""

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from spakky.outbox.common.stats import OutboxStats
from spakky.plugins.outbox_sqlalchemy.operations import ABANDONED, PENDING, OutboxSql
from spakky.plugins.outbox_sqlalchemy.schema import (
    create_outbox_table,
    drop_outbox_table,
)
from sqlalchemy import Connection, Engine, create_engine, text

URLS = {
    "postgres": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}


def previous_statement(sql: OutboxSql, name: str) -> str:
    """The statement ``stats()`` ran before: one aggregate over every row."""
    now = "now()" if sql.kind.value == "postgresql" else "UTC_TIMESTAMP(6)"
    return (
        "SELECT "
        f"COALESCE(SUM(CASE WHEN {PENDING} THEN 1 ELSE 0 END), 0) AS pending, "
        f"COALESCE(SUM(CASE WHEN {PENDING} AND claimed_by IS NOT NULL "
        f"AND lease_until > {now} THEN 1 ELSE 0 END), 0) AS claimed, "
        "COALESCE(SUM(CASE WHEN published_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS published, "
        f"COALESCE(SUM(CASE WHEN {ABANDONED} THEN 1 ELSE 0 END), 0) AS abandoned, "
        f"MIN(CASE WHEN {PENDING} THEN created_at END) AS oldest, {now} AS db_now "
        f"FROM {name}"
    )


def load(engine: Engine, name: str, delivered: int, backlog: int) -> None:
    """``delivered`` published rows, then ``backlog`` pending ones (1% of them abandoned)."""
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        if postgres:
            connection.exec_driver_sql(f"ALTER TABLE {name} SET (autovacuum_enabled = false)")
        for published, count in ((True, delivered), (False, backlog)):
            done = 0
            while done < count:
                chunk = min(200_000, count - done)
                insert_rows(connection, name, chunk, published=published, postgres=postgres)
                done += chunk
        connection.execute(
            text(
                f"UPDATE {name} SET abandoned_at = created_at, last_error = 'x' "
                f"WHERE published_at IS NULL AND MOD(seq, 100) = 0"
            )
        )
    with engine.begin() as connection:
        connection.exec_driver_sql(f"ANALYZE {name}" if postgres else f"ANALYZE TABLE {name}")


def insert_rows(connection: Connection, name: str, count: int, *, published: bool, postgres: bool) -> None:
    """Insert ``count`` rows in one statement, half of them on 100 keys."""
    published_at = "CURRENT_TIMESTAMP" if published else "NULL"
    if postgres:
        numbers, new_id, key = "generate_series(1, :count) AS n(i)", "gen_random_uuid()", "'k' || (i % 100)"
    else:
        digit = "(SELECT 0 AS d UNION ALL " + " UNION ALL ".join(f"SELECT {d}" for d in range(1, 10)) + ")"
        numbers = (
            "(SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 100000 * g.d + 1 AS i FROM "
            + " CROSS JOIN ".join(f"{digit} {alias}" for alias in "abcefg")
            + ") AS n WHERE i <= :count"
        )
        new_id, key = "REPLACE(UUID(), '-', '')", "CONCAT('k', i % 100)"
    connection.execute(
        text(
            f"INSERT INTO {name} (id, event_name, payload, headers, partition_key, "
            "created_at, published_at, retry_count) "
            f"SELECT {new_id}, 'OrderPlaced', 'x', '{{}}', CASE WHEN i % 2 = 0 THEN {key} END, "
            f"CURRENT_TIMESTAMP, {published_at}, 0 FROM {numbers}"
        ),
        {"count": count},
    )


def plan(connection: Connection, statement: str, params: dict[str, Any], postgres: bool) -> list[str]:
    """EXPLAIN lines of ``statement`` (PostgreSQL: text with ANALYZE, buffers; MariaDB: the table)."""
    if postgres:
        rows = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params).scalars().all()
        return [str(r) for r in rows]
    rows = connection.exec_driver_sql("EXPLAIN " + statement, params).mappings().all()
    return [
        f"id={r['id']} {r['select_type']:<12} table={r['table']} type={r['type']} "
        f"key={r['key']} rows={r['rows']} extra={r['Extra']}"
        for r in rows
    ]


def timed(run: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    """Wall-clock seconds of ``runs`` calls and the last result."""
    times: list[float] = []
    result: Any = None
    for _ in range(runs):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return times, result


@contextmanager
def loaded_table(kind: str, prefix: str, delivered: int, backlog: int) -> Iterator[tuple[Engine, OutboxSql, str]]:
    """A fresh outbox table on ``kind`` loaded by `load` and analysed; dropped (and the engine disposed) after.

    Yields:
        The engine, the storage's SQL on the table, and the table's name.
    """
    engine = create_engine(URLS[kind])
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    sql = OutboxSql(
        table=create_outbox_table(engine, name),
        dialect=engine.dialect,
        owner=uuid.uuid4().hex,
        claim_timeout_seconds=300.0,
        claim_lease_seconds=30.0,
    )
    try:
        started = time.perf_counter()
        load(engine, name, delivered, backlog)
        print(
            f"\n[{kind}] loaded {delivered:,} published + {backlog:,} pending (1% abandoned, half on 100 keys) "
            f"in {time.perf_counter() - started:.0f} s, analysed"
        )
        yield engine, sql, name
    finally:
        drop_outbox_table(engine, name)
        engine.dispose()


def section(kind: str, delivered: int, backlog: int, runs: int) -> dict[str, Any]:
    """Load one table on ``kind`` and compare both statements on it."""
    postgres = kind == "postgres"
    with loaded_table(kind, "stats_bench", delivered, backlog) as (engine, sql, name):
        old = previous_statement(sql, name)
        new = str(sql.stats_statement(5.0))  # the very statement stats() runs
        if not postgres:
            new = new.split(" FOR ", 1)[1]  # EXPLAIN the SELECT without its SET STATEMENT prefix
        with engine.connect() as connection:
            old_plan = plan(connection, old, {}, postgres)
            new_plan = plan(connection, new.replace(":cap", str(sql.count_cap)), {}, postgres)

            connection.rollback()

            def read_old() -> Any:
                with connection.begin():
                    return tuple(connection.exec_driver_sql(old).one())

            def read_new() -> OutboxStats:
                with connection.begin():
                    return sql.stats(connection, 5.0)

            old_times, old_result = timed(read_old, runs)
            new_times, new_result = timed(read_new, runs)
            stopped = stopped_by_server(connection, old, postgres)
    return {
        "kind": kind,
        "old_plan": old_plan,
        "new_plan": new_plan,
        "old_ms": [round(t * 1000, 1) for t in old_times],
        "new_ms": [round(t * 1000, 1) for t in new_times],
        "old_result": [str(v) for v in old_result[:5]],
        "new_result": str(new_result),
        "stopped": stopped,
    }


def stopped_by_server(connection: Connection, old: str, postgres: bool) -> str:
    """Run the previous full scan under a 50 ms server-side limit: the server stops it."""
    start = time.perf_counter()
    try:
        with connection.begin():
            if postgres:
                connection.exec_driver_sql("SET LOCAL statement_timeout = 50")
                connection.exec_driver_sql(old).one()
            else:
                connection.exec_driver_sql(f"SET STATEMENT max_statement_time = 0.050 FOR {old}").one()
    except Exception as error:  # the server's own cancellation error is the point
        return f"stopped by the server after {(time.perf_counter() - start) * 1000:.0f} ms: {str(error).splitlines()[0][:120]}"
    return f"NOT stopped: finished in {(time.perf_counter() - start) * 1000:.0f} ms"


def report(result: dict[str, Any]) -> None:
    """Print one section: plans one after the other, timings side by side."""
    kind = result["kind"]
    print(f"\n=== {kind}: previous statement (full aggregate) ===")
    print("\n".join(result["old_plan"]))
    print(f"\n=== {kind}: current statement (capped index reads) ===")
    print("\n".join(result["new_plan"]))
    old_med, new_med = statistics.median(result["old_ms"]), statistics.median(result["new_ms"])
    print(f"\n{kind:<9} {'':<10} {'previous':>12} {'current':>12} {'ratio':>8}")
    print(f"{kind:<9} {'median ms':<10} {old_med:>12.1f} {new_med:>12.1f} {old_med / max(new_med, 0.001):>7.0f}x")
    print(f"{kind:<9} {'max ms':<10} {max(result['old_ms']):>12.1f} {max(result['new_ms']):>12.1f}")
    print(f"{kind:<9} previous returned pending, claimed, published, abandoned, oldest: {result['old_result']}")
    print(f"{kind:<9} current returned {result['new_result']}")
    print(f"{kind:<9} previous full scan under a 50 ms server limit: {result['stopped']}")


def main() -> None:
    """Parse the sizes, run each database's section, print them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delivered", type=int, default=1_200_000)
    parser.add_argument("--backlog", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", default="postgres,mariadb")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args()
    results = [section(kind, args.delivered, args.backlog, args.runs) for kind in args.only.split(",")]
    for result in results:
        report(result)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
