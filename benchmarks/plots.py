"""PNG plots of a ``make bench`` run, drawn with matplotlib from the run's results JSON.

`benchmarks.run` calls `draw` after every run; to redraw (and reprint the
table) from a saved run::

    uv run python -m benchmarks.plots docs/benchmarks/results.json [--out DIR]
"""

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from benchmarks.report import (
    BACKENDS,
    KILL_BAR_S,
    LATENCY_BAR_MS,
    RESTART_BAR_S,
    SPEEDUP_BAR,
    build_rows,
    dig,
    render_text,
)

OURS_PG, OURS_REDIS, OURS_MONGO, LEGACY = "#1f6fb4", "#d62728", "#2ca02c", "#7f7f7f"
BAR_STYLE: dict[str, Any] = {"color": "black", "linestyle": "--", "linewidth": 1}
FLOOR_MS = 0.1
"""Latencies below this are drawn at it (a log axis has no zero)."""


def _ms(value: float) -> str:
    """Milliseconds for a label: 3 significant digits, thousands without exponent."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def _save(figure: Figure, path: Path, caption: str, bottom: float = 0.04) -> Path:
    figure.text(0.01, 0.01, caption, fontsize=7, color="#555555", ha="left", va="bottom")
    figure.tight_layout(rect=(0, bottom, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _caption(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    return (
        f"{meta.get('kind', '?')} run started {meta.get('started', '?')}, {meta.get('cores', '?')} cores "
        f"(shared, load {meta.get('load_start', [math.nan])[0]:.1f}); workspace {meta.get('commit')}"
    )


def _series(section: Any, kind: str) -> tuple[list[int], list[float]]:
    """Backlog sizes and median claim times of one claim section's ``kind`` shape."""
    entries = dig(section, kind) or {}
    points = sorted(
        (int(size), entry["median_ms"]) for size, entry in entries.items() if _number(entry.get("median_ms"))
    )
    return [p[0] for p in points], [p[1] for p in points]


def claim_cost(results: dict[str, Any], out: Path) -> Path:
    """Median claim of 100 against backlog size, keyless and keyed; ours beside 8.5.0."""
    ours, legacy = results["ours"], results["legacy_85"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    lines = [
        ("ours, PostgreSQL", dig(ours, "claim"), OURS_PG, "o-"),
        ("ours, Redis", dig(ours, "redis_claim"), OURS_REDIS, "s-"),
        ("ours, MongoDB", dig(ours, "mongodb_claim"), OURS_MONGO, "^-"),
        ("8.5.0, PostgreSQL", dig(legacy, "claim"), LEGACY, "x--"),
    ]
    for ax, kind, bar in ((axes[0], "keyless", 10.0), (axes[1], "keyed", 20.0)):
        for label, section, color, style in lines:
            sizes, medians = _series(section, kind)
            if sizes:
                ax.plot(sizes, medians, style, color=color, label=label)
                ax.annotate(f"{_ms(medians[-1])} ms", (sizes[-1], medians[-1]), textcoords="offset points",
                            xytext=(-4, 5), ha="right", fontsize=7, color=color)
        ax.axhline(bar, **BAR_STYLE, label="bar at the largest backlog (keyless < 10 ms, keyed < 20 ms)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pending messages")
        ax.set_title(
            "keyless" if kind == "keyless"
            else "keyed: 1,000 keys, half on one key whose head another instance holds"
        , fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("one claim of 100 (median ms)")
    handles, labels = axes[1].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, 0.04))
    figure.suptitle("Claim cost against backlog size")
    return _save(figure, out / "claim_cost.png", _caption(results), bottom=0.12)


def drain_rate(results: dict[str, Any], out: Path) -> Path:
    """Drain rate of one in-process relay per backend (in-memory transport), beside 8.5.0."""
    ours, legacy = results["ours"], results["legacy_85"]
    bars = [
        ("8.5.0, PostgreSQL, defaults (1 s polling)", dig(legacy, "drain", "default", "rate"), LEGACY),
        ("8.5.0, PostgreSQL, 0.01 s polling", dig(legacy, "drain", "fast", "rate"), LEGACY),
        ("ours, PostgreSQL, defaults", dig(ours, "drain", "rate"), OURS_PG),
        ("ours, Redis, defaults", dig(ours, "redis_drain", "rate"), OURS_REDIS),
        ("ours, MongoDB, defaults", dig(ours, "mongodb_drain", "rate"), OURS_MONGO),
    ]
    bars = [b for b in bars if _number(b[1])]
    figure, ax = plt.subplots(figsize=(9, 0.6 * len(bars) + 1.6))
    labels = [b[0] for b in bars]
    ax.barh(labels, [b[1] for b in bars], color=[b[2] for b in bars])
    for index, (_, rate, _) in enumerate(bars):
        ax.annotate(f"{rate:,.0f}/s", (rate, index), textcoords="offset points", xytext=(4, -3), fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("messages per second (log scale)")
    ax.set_title("Drain rate: one relay in process, preloaded backlog, in-memory transport")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return _save(figure, out / "drain_rate.png", _caption(results))


def latency(results: dict[str, Any], out: Path) -> Path:
    """Distribution (CDF) of commit-to-send at a fixed event rate."""
    ours, legacy = results["ours"], results["legacy_85"]
    series = [
        ("ours, PostgreSQL, relay in the same process", dig(ours, "latency"), OURS_PG, "-"),
        ("ours, PostgreSQL, relay in another process", dig(ours, "relays_latency", "postgres"), OURS_PG, ":"),
        ("ours, Redis, relay in another process", dig(ours, "relays_latency", "redis"), OURS_REDIS, ":"),
        ("8.5.0, PostgreSQL, relay in the same process", dig(legacy, "latency"), LEGACY, "-"),
    ]
    figure, ax = plt.subplots(figsize=(10, 5.6))
    for label, entry, color, style in series:
        values = sorted(v for v in (dig(entry, "latencies_ms") or []) if _number(v))
        if not values:
            continue
        shares = [(i + 1) / len(values) for i in range(len(values))]
        p99 = dig(entry, "p99_ms")
        ax.step([max(v, FLOOR_MS) for v in values], shares, where="post", color=color, linestyle=style,
                label=f"{label} (p50 {_ms(dig(entry, 'p50_ms'))}, p99 {_ms(p99)} ms)")
    ax.axvline(LATENCY_BAR_MS, **BAR_STYLE, label=f"bar: p99 <= {LATENCY_BAR_MS:.0f} ms")
    ax.set_xscale("log")
    ax.set_xlabel(
        f"commit to send (ms, log scale; under {FLOOR_MS} ms drawn at {FLOOR_MS}: the relay in another "
        "process can send before the writer's commit call has returned)",
        fontsize=8,
    )
    ax.set_ylabel("share of events")
    ax.set_ylim(0, 1.02)
    rate = results["sizes"].get("latency_rate")
    ax.set_title(f"Commit-to-send at {rate} events/s, default settings")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    return _save(figure, out / "latency.png", _caption(results))


def relays(results: dict[str, Any], out: Path) -> Path | None:
    """Drain rate with 1 and 3 relay processes, per backend and key count (50 ms flush)."""
    section = dig(results["ours"], "relays_drain")
    if not isinstance(section, dict):
        return None
    sizes = results["sizes"]
    groups: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None, bool]] = []
    for name, label in BACKENDS:
        for keys in sizes["relays_keys"]:
            one = dig(section, name, f"1x{keys}")
            three = dig(section, name, f"3x{keys}")
            if one or three:
                groups.append((f"{label}\n{keys:,} keys", one, three, keys == 100))
    if not groups:
        return None
    figure, ax = plt.subplots(figsize=(9, 4.8))
    width = 0.38
    for index, (_, one, three, judged) in enumerate(groups):
        for offset, entry, shade, text in ((-width / 2, one, "#9ecae1", "1 relay"), (width / 2, three, OURS_PG, "3 relays")):
            if not entry:
                continue
            ax.bar(index + offset, entry["rate"], width, color=shade, label=text if index == 0 else None)
            ax.annotate(f"{entry['seconds']:.1f} s", (index + offset, entry["rate"]), ha="center",
                        textcoords="offset points", xytext=(0, 2), fontsize=7)
        if one and three:
            ax.annotate(f"{one['seconds'] / three['seconds']:.2f}x", (index + width / 2, three["rate"]), ha="center",
                        textcoords="offset points", xytext=(0, 12), fontsize=9, fontweight="bold")
            if judged:
                target = SPEEDUP_BAR * one["rate"]
                ax.hlines(target, index + width / 2 - width / 2, index + width / 2 + width / 2, **BAR_STYLE,
                          label=f"bar: {SPEEDUP_BAR}x one relay (100 keys)" if index == 0 else None)
    ax.set_xticks(range(len(groups)), [g[0] for g in groups])
    ax.set_ylabel("messages per second (first to last delivery)")
    ax.set_title(
        f"Relay processes at defaults: {sizes['relays_events']:,} events, "
        f"{sizes['relays_flush_seconds'] * 1000:.0f} ms flush; 1 vs 3 relays"
    )
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
    return _save(figure, out / "relays.png", _caption(results))


def recovery(results: dict[str, Any], out: Path) -> Path | None:
    """Recovery after SIGKILL of a relay and after a storage restart, per backend, with the bars."""
    ours = results["ours"]
    if not (dig(ours, "relays_kill") or dig(ours, "relays_restart")):
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1, 2]})
    colors = {"postgres": OURS_PG, "redis": OURS_REDIS}
    names = [name for name, _ in BACKENDS]
    labels = dict(BACKENDS)

    def bars(ax: Axes, values: list[tuple[str, float | None, str]], bar: float, title: str) -> None:
        for index, (name, value, _) in enumerate(values):
            if value is None:
                ax.annotate("no figure", (index, 0), ha="center", fontsize=8, xytext=(0, 3),
                            textcoords="offset points")
                continue
            ax.bar(index, value, 0.6, color=colors.get(name, LEGACY))
            ax.annotate(f"{value:.2f} s", (index, value), ha="center", textcoords="offset points",
                        xytext=(0, 2), fontsize=8)
        ax.axhline(bar, **BAR_STYLE, label=f"bar: <= {bar:.0f} s")
        ax.set_xticks(range(len(values)), [v[2] or v[0] for v in values], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("seconds")
        ax.set_ylim(0, max([bar, *(v[1] for v in values if v[1] is not None)]) * 1.2)
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(True, axis="y", alpha=0.3)

    kills: list[tuple[str, float | None, str]] = []
    for name in names:
        entry = dig(ours, "relays_kill", name)
        if entry is not None:
            value = entry.get("resumed_seconds")
            kills.append((name, value if _number(value) else None, labels[name]))
    bars(left, kills, KILL_BAR_S, "SIGKILL 1 of 3 relays: every key delivered again after")
    restarts: list[tuple[str, float | None, str]] = []
    for name in names:
        entry = dig(ours, "relays_restart", name)
        if entry is None or entry.get("not_run"):
            continue
        for field, text in (("resumed_after_accepting_seconds", "from server\nback"),
                            ("resumed_after_command_seconds", "from restart\ncommand")):
            value = entry.get(field)
            restarts.append((name, value if _number(value) else None, f"{labels[name]}\n{text}"))
    bars(right, restarts, RESTART_BAR_S, "Storage restart (~1 s): deliveries resumed after")
    figure.suptitle("Recovery at default settings (lease 10 s, claim timeout 300 s)")
    return _save(figure, out / "recovery.png", _caption(results))


def draw(results: dict[str, Any], out: Path) -> list[Path]:
    """Every plot this run has data for, as PNG files in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = [claim_cost(results, out), drain_rate(results, out), latency(results, out)]
    drawn += [p for p in (relays(results, out), recovery(results, out)) if p is not None]
    return drawn


def main() -> None:
    """Redraw the plots and reprint the table from a saved results JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="results.json written by benchmarks.run")
    parser.add_argument("--out", type=Path, help="directory for the PNG files (default: beside the JSON)")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    print(render_text(build_rows(results)))
    for path in draw(results, args.out or args.results.parent):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
