"""Console cost against backlog size: each page and action at 10,000 and at 1,000,000 rows, in one run.

Every console page and action must cost O(page), whatever the outbox holds.
The script fills two PostgreSQL outbox tables (``INSERT ... SELECT
generate_series``: 80 % published, 10 % pending over 1,000 keys, 1 % of all
rows of them claimed by one of three relays with a live lease, 10 % abandoned
with two kinds of failure), starts the application as ``spakky-outbox`` does
over each, and times every route of the console through Starlette's test
client (the HTTP stack in process, the storage real): each HTML page
(overview, abandoned, pending by key, a message's detail, audit) and each JSON
API (overview, health, failure groups, one group's abandoned messages, keys,
a message, audit), the storage's ``relay_claims`` the overview shows as its
relays, a requeue dry run of one group and the requeue itself (one confirmed
run: at most 1,000 messages). Both outboxes are up at once and the sizes take
turns call by call, so the load of a shared machine falls on both alike. It
prints the median of a few calls per size and the ratio 1M / 10k; O(page)
shows as a ratio near 1, a scan as one near 100. Each run works on tables of
its own (``console_outbox_<random>``, dropped at the end), so runs may
overlap.

Usage: ``python -m benchmarks.console [--url postgresql://...] [--repeat 5]``.
"""

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import httpx
from pydantic import SecretStr
from spakky.outbox.console.app import outbox_console
from spakky.outbox.console.config import OutboxConsoleConfig
from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from benchmarks.common import DEFAULT_PG_URL
from tests.console.outbox_app import Outbox, started_outbox

SIZES = (10_000, 1_000_000)
TOKEN = "bench-console-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Outbox-Operator": "benchmark"}


def fill(outbox: Outbox, rows: int) -> None:
    """Fill the application's (empty) outbox table with ``rows`` rows in one statement."""
    with outbox.engine.begin() as connection:
        connection.execute(
            text(
                f"""
                INSERT INTO {outbox.table}
                    (id, event_name, payload, headers, created_at, published_at, retry_count,
                     partition_key, abandoned_at, last_error, claimed_by, claimed_at, lease_until)
                SELECT gen_random_uuid(), 'OrderPlaced', '\\x7b7d'::bytea, '{{}}'::json,
                       now() - interval '2 hours' + g * interval '1 ms',
                       CASE WHEN g % 10 < 8 THEN now() END,
                       CASE WHEN g % 10 = 9 THEN 5 ELSE 0 END,
                       'customer-' || (g % 1000),
                       CASE WHEN g % 10 = 9 THEN now() - interval '1 hour' + g * interval '1 ms' END,
                       CASE WHEN g % 10 = 9 THEN
                           CASE WHEN g % 20 = 9 THEN 'EventDeliveryRejectedError: no route for order ' || g
                                ELSE 'TimeoutError: broker 10.0.0.' || (g % 7) || ' port 5672 did not answer in 30 s' END
                       END,
                       CASE WHEN g % 100 = 8 THEN 'relay-' || (g % 3) END,
                       CASE WHEN g % 100 = 8 THEN now() END,
                       CASE WHEN g % 100 = 8 THEN now() + interval '1 hour' END
                FROM generate_series(1, :rows) AS g
                """
            ),
            {"rows": rows},
        )
        connection.execute(text(f"ANALYZE {outbox.table}"))


def interleaved_ms(calls: Sequence[Callable[[], object]], repeat: int) -> list[float]:
    """Median wall time of each of ``calls``, run in turn ``repeat`` times after one warm-up each.

    Taking turns puts every size under the same load of the (shared) machine,
    so the ratio compares the sizes, not two moments of the machine.
    """
    for call in calls:
        call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeat):
        for call, kept in zip(calls, times, strict=True):
            started = time.perf_counter()
            call()
            kept.append((time.perf_counter() - started) * 1000)
    return [statistics.median(kept) for kept in times]


def ok(response: httpx.Response) -> dict[str, Any]:
    """The JSON document of a 2xx response (or an unhealthy 503); anything else stops the benchmark."""
    if not 200 <= response.status_code < 300 and response.status_code != 503:
        raise SystemExit(f"console answered {response.status_code}: {response.text}")
    document: dict[str, Any] = response.json()
    return document


def page(response: httpx.Response) -> str:
    """The HTML of a 200 page; anything else stops the benchmark."""
    if response.status_code != 200:
        raise SystemExit(f"console answered {response.status_code}: {response.text[:500]}")
    return response.text


def reads(outbox: Outbox, client: TestClient) -> dict[str, Callable[[], object]]:
    """The console calls timed, over one outbox's console."""
    fingerprint = ok(client.get("/api/failure-groups"))["groups"][0]["fingerprint"]
    body = {"scope": "group", "fingerprint": fingerprint}
    # A message from the middle of the table: its detail is one lookup by id, wherever it is.
    with outbox.engine.connect() as connection:
        middle = connection.execute(
            text(f"SELECT id FROM {outbox.table} WHERE seq = (SELECT (MIN(seq) + MAX(seq)) / 2 FROM {outbox.table})")
        ).scalar_one()
    relays = ok(client.get("/api/overview"))["relays"]
    if not relays:
        raise SystemExit("the overview shows no relay: the filled claims are not seen")
    return {
        "page /": lambda: page(client.get("/")),
        "page /abandoned (group)": lambda: page(client.get(f"/abandoned?group={fingerprint}")),
        "page /keys": lambda: page(client.get("/keys")),
        "page /messages/{id}": lambda: page(client.get(f"/messages/{middle}")),
        "page /audit": lambda: page(client.get("/audit")),
        "api overview": lambda: ok(client.get("/api/overview")),
        "relay_claims (overview relays)": lambda: outbox.loop.run_blocking(outbox.storage.relay_claims()),
        "api health": lambda: ok(client.get("/api/health")),
        "api failure groups": lambda: ok(client.get("/api/failure-groups")),
        "api abandoned of a group (50)": lambda: ok(client.get(f"/api/abandoned?group={fingerprint}&limit=50")),
        "api keys (pending by key)": lambda: ok(client.get("/api/keys")),
        "api messages/{id}": lambda: ok(client.get(f"/api/messages/{middle}")),
        "api audit": lambda: ok(client.get("/api/audit")),
        "requeue dry run (group)": lambda: ok(
            client.post("/api/actions/requeue/dry-run", json=body, headers=AUTH)
        ),
    }


def requeue_ms(client: TestClient) -> float:
    """One confirmed requeue of the largest failure group (at most one run of 1,000 messages)."""
    fingerprint = ok(client.get("/api/failure-groups"))["groups"][0]["fingerprint"]
    body = {"scope": "group", "fingerprint": fingerprint}
    confirmation = ok(client.post("/api/actions/requeue/dry-run", json=body, headers=AUTH))["confirmation"]
    started = time.perf_counter()
    done = ok(client.post("/api/actions/requeue", json={"confirmation": confirmation}, headers=AUTH))
    elapsed = (time.perf_counter() - started) * 1000
    print(f"  requeued {done['entry']['affected']} messages in one run", flush=True)
    return elapsed


def measure(url: str, repeat: int) -> dict[int, dict[str, float]]:
    """Fill one outbox per size and time each console call over them, the sizes taking turns."""
    config = OutboxConsoleConfig(token=SecretStr(TOKEN))
    with ExitStack() as stack:
        clients: dict[int, tuple[Outbox, TestClient]] = {}
        for rows in SIZES:
            outbox = stack.enter_context(started_outbox(url))
            outbox.seed(1)  # the storage creates its table with the first save
            started = time.perf_counter()
            fill(outbox, rows)
            print(f"  {rows:>9,} rows filled in {time.perf_counter() - started:.1f} s ({outbox.table})", flush=True)
            client = stack.enter_context(TestClient(outbox_console(outbox.app.application_context, config)))
            clients[rows] = (outbox, client)
        calls = {rows: reads(outbox, client) for rows, (outbox, client) in clients.items()}
        results: dict[int, dict[str, float]] = {rows: {} for rows in SIZES}
        for name in calls[SIZES[0]]:
            for rows, median in zip(SIZES, interleaved_ms([calls[r][name] for r in SIZES], repeat), strict=True):
                results[rows][name] = median
        for rows, (_, client) in clients.items():
            results[rows]["requeue one group (one run)"] = requeue_ms(client)
    return results


def main() -> None:
    """Measure both sizes and print the table with the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=DEFAULT_PG_URL)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    create_engine(args.url).dispose()
    results = measure(args.url, args.repeat)
    small, large = results[SIZES[0]], results[SIZES[1]]
    print(f"\n{'console call':<34}{'10k rows':>12}{'1M rows':>12}{'1M / 10k':>10}")
    for name in small:
        print(f"{name:<34}{small[name]:>10.1f}ms{large[name]:>10.1f}ms{large[name] / small[name]:>9.2f}x")


if __name__ == "__main__":
    main()
