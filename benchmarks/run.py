"""Run every benchmark once and print ours beside spakky-outbox 8.5.0, with ratios.

Usage (from the workspace root)::

    uv run python -m benchmarks.run            # full run (a few minutes)
    uv run python -m benchmarks.run --quick    # smoke run with small sizes (< 1 min)
    uv run python -m benchmarks.run --only drain,claim --set claim_sizes=[1000,100000]

The published baseline runs in its own virtualenv ``.venv-bench`` (created on
first use with ``uv venv`` / ``uv pip install``), by `benchmarks.legacy_85`;
ours runs in the workspace venv, by `benchmarks.ours`. Each section starts a
fresh process per implementation; both use the same PostgreSQL (separate
schemas, dropped afterwards) and ours also Redis. Nothing here asserts on
timings: the bars are printed beside the figures.
"""

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_PG_URL,
    DEFAULT_REDIS_URL,
    RESULT_PREFIX,
    env_without_spakky,
)

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
    "write_seconds": 6.0,
    "write_warmup": 0.5,
    "write_concurrency": [1, 16],
    "latency_rate": 100,
    "latency_seconds": 10.0,
    "idle_seconds": 10.0,
    "claim_sizes": [1_000, 10_000, 1_000_000],
    "legacy_claim_sizes": [1_000, 10_000],
    "claim_keys": 1_000,
    "claim_reps": 10,
    "claim_budget_seconds": 20.0,
    "legacy_claim_budget_seconds": 20.0,
    "redis_drain_rows": 20_000,
    "redis_claim_sizes": [10_000, 1_000_000],
    "mongodb_drain_rows": 20_000,
    "mongodb_claim_sizes": [10_000, 1_000_000],
}
QUICK: dict[str, Any] = FULL | {
    "drain_rows": 2_000,
    "legacy_drain_rows_default": 100,
    "legacy_drain_rows_fast": 300,
    "write_seconds": 0.6,
    "write_warmup": 0.2,
    "latency_seconds": 1.5,
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
)


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


# ------------------------------------------------------------------ reporting
def dig(data: dict[str, Any], *path: str) -> Any:
    """``data[p0][p1]...`` or None when any step is missing."""
    node: Any = data
    for step in path:
        if not isinstance(node, dict) or step not in node:
            return None
        node = node[step]
    return node


def fmt(value: Any, unit: str = "") -> str:
    """Render a figure compactly."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text}{unit}"


def factor(better: Any, worse: Any) -> str:
    """How many times ``better`` exceeds ``worse`` (as ``12.3x``)."""
    if not isinstance(better, int | float) or not isinstance(worse, int | float) or not worse:
        return "-"
    return f"{better / worse:,.1f}x" if better / worse >= 10 else f"{better / worse:.2f}x"


def verdict(ok: bool | None) -> str:
    """Bar outcome as text."""
    return "-" if ok is None else ("met" if ok else "MISSED")


type Row = tuple[str, str, str, str, str, str]


def build_rows(ours: dict[str, Any], legacy: dict[str, Any], sizes: dict[str, Any]) -> list[Row]:
    """Table rows: metric, ours, 8.5.0, ratio (ours better by), bar, outcome."""
    rows: list[Row] = []

    ours_drain = dig(ours, "drain", "rate")
    fast = dig(legacy, "drain", "fast", "rate")
    rows.append((
        f"Drain, PostgreSQL (msg/s; ours {sizes['drain_rows']:,} rows, defaults)",
        fmt(ours_drain),
        fmt(dig(legacy, "drain", "default", "rate")) + " (defaults)",
        factor(ours_drain, dig(legacy, "drain", "default", "rate")),
        "",
        "",
    ))
    rows.append((
        "Drain vs 8.5.0 at polling 0.01 s (msg/s)",
        fmt(ours_drain),
        fmt(fast) + " (0.01 s)",
        factor(ours_drain, fast),
        ">= 20x",
        verdict(None if ours_drain is None or fast is None else ours_drain >= 20 * fast),
    ))
    redis_drain = dig(ours, "redis_drain", "rate")
    rows.append((
        f"Drain, Redis (msg/s; {sizes['redis_drain_rows']:,} msgs) vs ours on PostgreSQL",
        fmt(redis_drain),
        "-",
        factor(redis_drain, ours_drain) + " of PG",
        "",
        "",
    ))
    for level in sizes["write_concurrency"]:
        key = f"c{level}"
        label = "sequential" if level == 1 else f"{level} concurrent"
        ours_ratio = dig(ours, "write", key, "ratio")
        rows.append((
            f"Write path {label}: commits/s with event / without",
            f"{fmt(ours_ratio)} ({fmt(dig(ours, 'write', key, 'with_event_per_s'))}"
            f"/{fmt(dig(ours, 'write', key, 'without_event_per_s'))})",
            f"{fmt(dig(legacy, 'write', key, 'ratio'))} ({fmt(dig(legacy, 'write', key, 'with_event_per_s'))}"
            f"/{fmt(dig(legacy, 'write', key, 'without_event_per_s'))})",
            factor(dig(ours, "write", key, "with_event_per_s"), dig(legacy, "write", key, "with_event_per_s")),
            ">= 0.85",
            verdict(None if ours_ratio is None else ours_ratio >= 0.85),
        ))
        rows.append((
            f"  reference, {label}: one extra plain row instead of the event",
            fmt(dig(ours, "write", key, "extra_row_ratio")),
            fmt(dig(legacy, "write", key, "extra_row_ratio")),
            "",
            "",
            "",
        ))
    for quantile, bar in (("p50_ms", None), ("p99_ms", 50.0)):
        mine = dig(ours, "latency", quantile)
        rows.append((
            f"Commit-to-send {quantile[:3]} at {sizes['latency_rate']}/s, defaults (ms)",
            fmt(mine),
            fmt(dig(legacy, "latency", quantile)),
            factor(dig(legacy, "latency", quantile), mine),
            "" if bar is None else f"< {bar:.0f} ms",
            "" if bar is None else verdict(None if mine is None else mine < bar),
        ))
    idle = dig(ours, "idle", "statements_per_s")
    rows.append((
        "Idle relay, statements/s (relay engine)",
        fmt(idle),
        fmt(dig(legacy, "idle", "statements_per_s")),
        factor(dig(legacy, "idle", "statements_per_s"), idle),
        "<= 1/s",
        verdict(None if idle is None else idle <= 1.0),
    ))
    claim_sizes = sorted({*sizes["claim_sizes"], *sizes["legacy_claim_sizes"]})
    largest = max(sizes["claim_sizes"])
    for kind, bar in (("keyless", 10.0), ("keyed", 20.0)):
        for size in claim_sizes:
            mine = dig(ours, "claim", kind, str(size))
            theirs = dig(legacy, "claim", kind, str(size))
            mine_ms = None if mine is None else mine["median_ms"]
            theirs_ms = None if theirs is None else theirs["median_ms"]
            ok: bool | None = None
            if size == largest and mine is not None:
                ok = mine_ms is not None and mine_ms < bar
                if kind == "keyed":
                    ok = ok and mine["hot_key_returned"] == 0 and mine["returned_min"] > 0
            note = ""
            if kind == "keyed" and mine is not None:
                note = f" [{mine['returned_min']} returned, {mine['hot_key_returned']} of held key]"
            rows.append((
                f"Claim 100, {kind}{' (1k keys, held hot key)' if kind == 'keyed' else ''}, {size:,} pending (ms)",
                fmt(mine_ms) + note,
                fmt(theirs_ms),
                factor(theirs_ms, mine_ms),
                f"< {bar:.0f} ms" if size == largest else "",
                verdict(ok) if size == largest else "",
            ))
    redis_sizes = sorted(sizes["redis_claim_sizes"])
    for kind in ("keyless", "keyed"):
        small = dig(ours, "redis_claim", kind, str(redis_sizes[0]), "median_ms")
        large = dig(ours, "redis_claim", kind, str(redis_sizes[-1]), "median_ms")
        growth = None if small is None or large is None else large / small
        rows.append((
            f"Redis claim 100, {kind}: {redis_sizes[0]:,} -> {redis_sizes[-1]:,} pending (ms)",
            f"{fmt(small)} -> {fmt(large)} ({fmt(growth)}x)",
            "-",
            "",
            "within 2x",
            verdict(None if growth is None else growth <= 2.0),
        ))
    rows.extend(mongodb_rows(ours, sizes))
    return rows


def mongodb_rows(ours: dict[str, Any], sizes: dict[str, Any]) -> list[Row]:
    """MongoDB drain and claim growth, or why they did not run (never wire-server figures)."""
    not_run = dig(ours, "mongodb_drain", "not_run") or dig(ours, "mongodb_claim", "not_run")
    if not_run:
        return [("MongoDB (drain, claim 100)", f"not run: {not_run}", "-", "", "", "")]
    rows: list[Row] = [(
        f"Drain, MongoDB (msg/s; {sizes['mongodb_drain_rows']:,} msgs)",
        fmt(dig(ours, "mongodb_drain", "rate")), "-", "", "", "",
    )]
    mongo_sizes = sorted(sizes["mongodb_claim_sizes"])
    for kind in ("keyless", "keyed"):
        small = dig(ours, "mongodb_claim", kind, str(mongo_sizes[0]), "median_ms")
        large = dig(ours, "mongodb_claim", kind, str(mongo_sizes[-1]), "median_ms")
        growth = None if small is None or large is None else large / small
        rows.append((
            f"MongoDB claim 100, {kind}: {mongo_sizes[0]:,} -> {mongo_sizes[-1]:,} pending (ms)",
            f"{fmt(small)} -> {fmt(large)} ({fmt(growth)}x)", "-", "", "within 2x",
            verdict(None if growth is None else growth <= 2.0),
        ))
    return rows


def render_text(rows: list[Row]) -> str:
    """Plain-text table."""
    header: Row = ("Measurement", "ours", "8.5.0", "ours better by", "bar", "outcome")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(6)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    return "\n".join(lines)


def render_markdown(rows: list[Row]) -> str:
    """Markdown table."""
    header = "| Measurement | ours | 8.5.0 | ours better by | bar | outcome |"
    lines = [header, "|---|---:|---:|---:|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


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
    parser.add_argument("--json-out", type=Path, help="also write the raw results here")
    parser.add_argument("--markdown-out", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args()

    sizes = (QUICK if args.quick else FULL) | parse_overrides(args.set)
    sizes |= {"pg_url": args.pg_url, "redis_url": args.redis_url, "legacy_driver": args.legacy_driver}
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    started = time.perf_counter()
    if not args.skip_legacy:
        ensure_baseline(args.reinstall_baseline)

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
            module = "benchmarks.mongodb" if section.startswith("mongodb") else "benchmarks.ours"
            result = run_process(sys.executable, module, section, sizes)
            ours[section] = result.get(section, result)

    rows = build_rows(ours, legacy, sizes)
    elapsed = time.perf_counter() - started
    print()
    print(
        f"spakky-outbox benchmarks ({'quick' if args.quick else 'full'} run, "
        f"{elapsed:.0f} s; Python {platform.python_version()}, 8.5.0 driver {args.legacy_driver})"
    )
    print(render_text(rows))
    errors = {f"ours.{k}": v["error"] for k, v in ours.items() if isinstance(v, dict) and "error" in v}
    errors |= {f"8.5.0.{k}": v["error"] for k, v in legacy.items() if isinstance(v, dict) and "error" in v}
    for name, error in errors.items():
        print(f"! {name}: {error}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"sizes": sizes, "ours": ours, "legacy_85": legacy}, indent=2))
    if args.markdown_out:
        args.markdown_out.write_text(render_markdown(rows) + "\n")


if __name__ == "__main__":
    main()
