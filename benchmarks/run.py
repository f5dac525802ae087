"""Run every benchmark once and print ours beside spakky-outbox 8.5.0, with ratios and bars.

Usage (from the workspace root)::

    uv run python -m benchmarks.run            # full run (about 12 minutes)
    uv run python -m benchmarks.run --quick    # smoke run with small sizes
    uv run python -m benchmarks.run --only drain,claim --set claim_sizes=[1000,100000]

The published baseline runs in its own virtualenv ``.venv-bench`` (created on
first use with ``uv venv`` / ``uv pip install``), by `benchmarks.legacy_85`;
ours runs in the workspace venv, by `benchmarks.ours` (in-process sections),
`benchmarks.processes` (relay processes) and `benchmarks.mongodb`. Each section
starts a fresh process per implementation. Nothing here asserts on timings:
the bars are printed beside the figures.

Every run writes ``results.json`` (all figures), ``results.md`` (the table)
and PNG plots drawn from that JSON (`benchmarks.plots`): a full run with
default flags into ``docs/benchmarks/``, any other run into a scratch
directory (``--out`` chooses).
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import redis
from sqlalchemy.engine import make_url

from benchmarks.common import (
    DEFAULT_PG_URL,
    DEFAULT_REDIS_URL,
    RESULT_PREFIX,
    env_without_spakky,
)
from benchmarks.plots import draw
from benchmarks.report import build_rows, render_markdown, render_text

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / ".venv-bench"
BENCH_PYTHON = BENCH_VENV / "bin" / "python"
BASELINE_PACKAGES = (
    "spakky-outbox==8.5.0",
    "spakky-sqlalchemy[outbox]==8.5.0",
    "psycopg[binary]",
    "asyncpg",
    "greenlet",
)

FULL: dict[str, Any] = {
    "drain_rows": 20_000,
    "legacy_drain_rows_default": 1_000,
    "legacy_drain_rows_fast": 2_000,
    "write_seconds": 8.0,
    "write_rounds": 8,
    "write_warmup": 0.5,
    "write_concurrency": [1, 16],
    "latency_rate": 100,
    "latency_seconds": 10.0,
    "latency_warmup": 2.0,
    "idle_seconds": 10.0,
    "claim_sizes": [1_000, 10_000, 100_000, 1_000_000],
    "legacy_claim_sizes": [1_000, 10_000],
    "claim_keys": 1_000,
    "claim_reps": 10,
    "claim_budget_seconds": 20.0,
    "legacy_claim_budget_seconds": 20.0,
    "redis_drain_rows": 20_000,
    "redis_claim_sizes": [10_000, 100_000, 1_000_000],
    "mongodb_drain_rows": 20_000,
    "mongodb_claim_sizes": [10_000, 1_000_000],
    "relays_events": 20_000,
    "relays_keys": [100, 1_000],
    "relays_counts": [1, 3],
    "relays_flush_seconds": 0.05,
    "relays_deadline_seconds": 180.0,
    "relays_kill_deadline_seconds": 60.0,
    "relays_restart_deadline_seconds": 60.0,
    "redis_down_seconds": 1.0,
    "relays_latency_rate": 100,
    "relays_latency_seconds": 10.0,
    "relays_latency_warmup": 2.0,
    # SPAKKY_BENCH_BROKER_EVENTS=2000 makes the "through the broker" section a quick one.
    "broker_events": int(os.environ.get("SPAKKY_BENCH_BROKER_EVENTS", "20000")),
    "broker_keys": 100,
    "broker_spakky_rabbitmq_events": 2_000,
    "broker_deadline_seconds": 300.0,
    "limit_rows": 20_000,
    "inbox_concurrency": [1, 16],
    "inbox_seconds": 8.0,
    "inbox_rounds": 8,
    "inbox_warmup": 0.5,
}
QUICK: dict[str, Any] = FULL | {
    "drain_rows": 2_000,
    "legacy_drain_rows_default": 100,
    "legacy_drain_rows_fast": 300,
    "write_seconds": 0.6,
    "write_rounds": 2,
    "write_warmup": 0.2,
    "latency_seconds": 1.5,
    "latency_warmup": 0.5,
    "idle_seconds": 1.5,
    "claim_sizes": [1_000, 10_000],
    "legacy_claim_sizes": [1_000],
    "claim_reps": 5,
    "claim_budget_seconds": 3.0,
    "legacy_claim_budget_seconds": 3.0,
    "redis_drain_rows": 2_000,
    "redis_claim_sizes": [1_000, 10_000],
    "mongodb_drain_rows": 2_000,
    "mongodb_claim_sizes": [1_000, 10_000],
    "relays_events": 2_000,
    "relays_latency_seconds": 2.0,
    "relays_latency_warmup": 0.5,
    "broker_events": 2_000,
    "broker_spakky_rabbitmq_events": 300,
    "limit_rows": 2_000,
    "inbox_seconds": 0.6,
    "inbox_rounds": 2,
    "inbox_warmup": 0.2,
}

# (section, runs ours, runs 8.5.0)
SECTIONS: tuple[tuple[str, bool, bool], ...] = (
    ("drain", True, True),
    ("redis_drain", True, False),
    ("write", True, True),
    ("latency", True, True),
    ("idle", True, True),
    ("claim", True, True),
    ("redis_claim", True, False),
    ("mongodb_drain", True, False),
    ("mongodb_claim", True, False),
    ("relays_drain", True, False),
    ("relays_kill", True, False),
    ("relays_restart", True, False),
    ("relays_latency", True, False),
    ("broker_drain", True, False),
    ("limit_postgres", True, False),
    ("limit_redis", True, False),
    ("limit_mariadb", True, False),
    ("inbox_handle", True, False),
)
MODULES = {
    "mongodb": "benchmarks.mongodb",
    "relays": "benchmarks.processes",
    "broker": "benchmarks.broker",
    "limit": "benchmarks.storage_limit",
    "inbox": "benchmarks.inbox",
}
"""Module of the sections whose name starts with the key (others: `benchmarks.ours`)."""


PUBLISHED = ROOT / "docs" / "benchmarks"
"""Where a full run with default flags writes its results and plots (docs/benchmarks.md shows them)."""
SCRATCH = Path(tempfile.gettempdir()) / "spakky-bench"
"""Where other runs write theirs."""
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
VERSIONED = ("sqlalchemy", "asyncpg", "redis", "spakky", "matplotlib")
"""Packages whose versions a run records."""


def say(message: str) -> None:
    """Print a progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def baseline_version() -> str | None:
    """Versions of spakky-outbox / spakky-sqlalchemy in ``.venv-bench``, if usable."""
    if not BENCH_PYTHON.exists():
        return None
    probe = subprocess.run(
        [
            str(BENCH_PYTHON),
            "-c",
            "import importlib.metadata as m, asyncpg, greenlet, psycopg;"
            "print(m.version('spakky-outbox'), m.version('spakky-sqlalchemy'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_baseline(reinstall: bool) -> None:
    """Create ``.venv-bench`` with spakky-outbox 8.5.0 unless it is already there."""
    if not reinstall and baseline_version() == "8.5.0 8.5.0":
        return
    say("creating .venv-bench with spakky-outbox 8.5.0 (one-time)")
    uv = _uv()
    if reinstall or not BENCH_PYTHON.exists():
        subprocess.run([*uv, "venv", str(BENCH_VENV), "--python", "3.13", "--clear"], cwd=ROOT, check=True)
    subprocess.run(
        [*uv, "pip", "install", "--python", str(BENCH_PYTHON), *BASELINE_PACKAGES],
        cwd=ROOT,
        check=True,
    )
    installed = baseline_version()
    if installed != "8.5.0 8.5.0":
        raise SystemExit(f".venv-bench is not usable (found {installed!r})")


def run_process(python: str, module: str, section: str, sizes: dict[str, Any]) -> dict[str, Any]:
    """Run one section in a fresh process; return its JSON result (or the error).

    The child's stderr (progress) is echoed live; its last lines are kept for
    the error report.
    """
    command = [python, "-m", module, "--only", section, "--config", json.dumps(sizes)]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=env_without_spakky(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        stderr_tail: list[str] = []
        for line in child.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            stderr_tail = [*stderr_tail[-19:], line.rstrip()]
        stdout = child.stdout.read()
        returncode = child.wait()
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    say(f"  {module} --only {section} failed (exit {returncode})")
    last = [line for line in stderr_tail if line.strip()][-3:]
    return {"error": f"exit {returncode}: {' | '.join(last)}"}


def machine() -> dict[str, Any]:
    """The machine, the interpreter, the packages and the workspace commit of this run."""
    memory_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--exclude", "*"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout.strip()
    return {
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "packages": {name: metadata.version(name) for name in VERSIONED},
        "commit": commit or None,
    }


def server_versions(pg_url: str, redis_url: str) -> dict[str, str]:
    """Versions of the shared PostgreSQL and Redis the run used."""
    found: dict[str, str] = {}

    async def postgres() -> str:
        connection = await asyncpg.connect(make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False))
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    with contextlib.suppress(Exception):
        found["postgres"] = asyncio.run(postgres())
    with contextlib.suppress(Exception), redis.Redis.from_url(redis_url) as client:
        found["redis"] = str(client.info("server")["redis_version"])
    return found


def headline(meta: dict[str, Any]) -> str:
    """One paragraph naming the run: kind, duration, date, machine, versions, load."""
    servers = meta.get("servers", {})
    packages = meta.get("packages", {})
    return (
        f"spakky-outbox benchmarks: {meta['kind']} run, {meta['seconds']:.0f} s, started {meta['started']}; "
        f"{meta['platform']}, {meta['cores']} cores, {meta['memory_gb']} GB; Python {meta['python']}; "
        f"PostgreSQL {servers.get('postgres', '?')}, Redis {servers.get('redis', '?')}; "
        f"SQLAlchemy {packages.get('sqlalchemy')}, asyncpg {packages.get('asyncpg')}, redis-py {packages.get('redis')}; "
        f"baseline {meta.get('baseline') or 'not run'}; workspace {meta.get('commit')}; "
        f"load average {meta['load_start'][0]:.1f} at start, {meta['load_end'][0]:.1f} at end"
    )


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse, text otherwise."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def main() -> None:
    """Parse flags, run the sections, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run under a minute")
    parser.add_argument("--only", default="", help="comma-separated sections: " + ",".join(s for s, _, _ in SECTIONS))
    parser.add_argument("--skip-legacy", action="store_true", help="do not run spakky-outbox 8.5.0")
    parser.add_argument("--skip-redis", action="store_true", help="do not run the Redis storage")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL URL (any driver; replaced)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--legacy-driver",
        default="postgresql+asyncpg",
        help="driver of 8.5.0's async storage (postgresql+asyncpg or postgresql+psycopg)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a size, e.g. drain_rows=50000")
    parser.add_argument("--reinstall-baseline", action="store_true", help="recreate .venv-bench")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"where results.json, results.md and the plots go (default: {PUBLISHED} for a full "
        f"run with default flags, else {SCRATCH})",
    )
    args = parser.parse_args()

    sizes = (QUICK if args.quick else FULL) | parse_overrides(args.set)
    sizes |= {
        "pg_url": args.pg_url,
        "redis_url": args.redis_url,
        "legacy_driver": args.legacy_driver,
        "skip_redis": args.skip_redis,
    }
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    published = not (args.quick or wanted or args.set or args.skip_legacy or args.skip_redis)
    out: Path = args.out or (PUBLISHED if published else SCRATCH)
    started = time.perf_counter()
    meta = machine() | {"started": datetime.now(UTC).isoformat(timespec="seconds"), "load_start": os.getloadavg()}
    if not args.skip_legacy:
        ensure_baseline(args.reinstall_baseline)
        meta["baseline"] = baseline_version()

    ours: dict[str, Any] = {}
    legacy: dict[str, Any] = {}
    for section, has_ours, has_legacy in SECTIONS:
        if wanted and section not in wanted:
            continue
        if args.skip_redis and section.startswith("redis"):
            continue
        if has_legacy and not args.skip_legacy:
            say(f"{section}: spakky-outbox 8.5.0")
            result = run_process(str(BENCH_PYTHON), "benchmarks.legacy_85", section, sizes)
            legacy[section] = result.get(section, result)
        if has_ours:
            say(f"{section}: ours")
            module = MODULES.get(section.split("_")[0], "benchmarks.ours")
            result = run_process(sys.executable, module, section, sizes)
            ours[section] = result.get(section, result)

    meta |= {
        "kind": "quick" if args.quick else "full",
        "seconds": round(time.perf_counter() - started, 1),
        "load_end": os.getloadavg(),
        "servers": server_versions(args.pg_url, args.redis_url),
    }
    results = {"meta": meta, "sizes": sizes, "ours": ours, "legacy_85": legacy}
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_JSON).write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(headline(meta))
    rows = build_rows(results)
    print(render_text(rows))
    errors = {f"ours.{k}": v["error"] for k, v in ours.items() if isinstance(v, dict) and "error" in v}
    errors |= {f"8.5.0.{k}": v["error"] for k, v in legacy.items() if isinstance(v, dict) and "error" in v}
    for name, error in errors.items():
        print(f"! {name}: {error}")
    (out / RESULTS_MD).write_text(f"{headline(meta)}\n\n{render_markdown(rows)}\n")
    drawn = draw(results, out)
    print(f"\nresults: {out / RESULTS_JSON}, {out / RESULTS_MD}; plots: {', '.join(p.name for p in drawn)}")


if __name__ == "__main__":
    main()
