"""The comparison table of ``make bench``: figures side by side, ratios, bars and outcomes.

Built from the results JSON alone (`benchmarks.run` writes it), so a table can
be rebuilt from a saved run. Bars are printed beside the figures, never asserted.
"""

import itertools
import math
from typing import Any

type Row = tuple[str, str, str, str, str, str]
"""Measurement, ours, 8.5.0, ours better by, bar, outcome."""

BACKENDS = (("postgres", "PostgreSQL"), ("redis", "Redis"))

WRITE_BAR = 0.95
"""Ours with an event, as a share of the one-extra-plain-row reference (issue 9)."""
SPEEDUP_BAR = 2.5
"""3 relays against 1 over 100 keys with the 50 ms flush (issue 8)."""
KILL_BAR_S = 15.0
RESTART_BAR_S = 5.0
LATENCY_BAR_MS = 50.0
LIMIT_BAR = 0.7
"""Our relay's drain as a share of the bare claim + acknowledge loop (issue 21)."""
INBOX_BAR = 0.9
"""A handler with the inbox as a share of the same handler writing one extra plain row (issue 19)."""


def dig(data: Any, *path: str) -> Any:
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


def both(*values: Any) -> bool:
    """Whether every value is a number (so a bar can be judged)."""
    return all(isinstance(v, int | float) and not math.isnan(v) for v in values)


def build_rows(results: dict[str, Any]) -> list[Row]:
    """Every row of the table, in the order the sections run."""
    ours, legacy, sizes = results["ours"], results["legacy_85"], results["sizes"]
    return [
        *drain_rows(ours, legacy, sizes),
        *write_rows(ours, legacy, sizes),
        *latency_rows(ours, legacy, sizes),
        *idle_rows(ours, legacy),
        *claim_rows(ours, legacy, sizes),
        *redis_claim_rows(ours, sizes),
        *mongodb_rows(ours, sizes),
        *relay_rows(ours, sizes),
        *broker_rows(ours),
        *limit_rows(ours, sizes),
        *inbox_rows(ours, sizes),
    ]


def limit_rows(ours: dict[str, Any], sizes: dict[str, Any]) -> list[Row]:
    """Our relay beside the bare claim + acknowledge loop of the same driver and table (Redis: the same scripts)."""
    rows: list[Row] = []
    backends = (
        ("limit_postgres", "bare asyncpg loop, PostgreSQL"),
        ("limit_redis", "bare loop of the storage's scripts, Redis"),
        ("limit_mariadb", "bare aiomysql loop of the storage's statements, MariaDB"),
    )
    for (section, label), lane in itertools.product(backends, ("keyless", "keyed")):
        relay = dig(ours, section, f"{lane}_ours", "rate")
        bare = dig(ours, section, f"{lane}_bare", "rate")
        rows.append(
            (
                f"Drain vs {label} {lane} (msg/s; "
                f"{sizes.get('limit_rows', 0):,} rows{', 100 keys' if lane == 'keyed' else ''}; "
                f"median of {len(dig(ours, section, f'{lane}_ours', 'round_rates') or [])} alternating rounds)",
                f"{fmt(relay)} ({factor(relay, bare)} of bare)",
                f"{fmt(bare)} (bare loop)",
                "",
                f">= {LIMIT_BAR}x",
                verdict(relay >= LIMIT_BAR * bare if both(relay, bare) else None),
            )
        )
    return rows


def inbox_rows(ours: dict[str, Any], sizes: dict[str, Any]) -> list[Row]:
    """A handler with the inbox beside the same handler writing one plain row more."""
    rows: list[Row] = []
    for level in sizes.get("inbox_concurrency", []):
        ratio = dig(ours, "inbox_handle", f"c{level}", "ratio")
        rows.append(
            (
                f"Handler with the inbox / with one extra row, PostgreSQL x{level} (median of rounds)",
                f"{fmt(ratio)} ({fmt(dig(ours, 'inbox_handle', f'c{level}', 'inbox_per_s'))}"
                f"/{fmt(dig(ours, 'inbox_handle', f'c{level}', 'extra_row_per_s'))} commits/s)",
                "- (8.5.0 has no inbox)",
                "",
                f">= {INBOX_BAR}x",
                verdict(ratio >= INBOX_BAR if both(ratio) else None),
            )
        )
    return rows


def drain_rows(ours: dict[str, Any], legacy: dict[str, Any], sizes: dict[str, Any]) -> list[Row]:
    """In-process drain: ours on PostgreSQL and Redis, 8.5.0 at two polling intervals."""
    ours_drain = dig(ours, "drain", "rate")
    default = dig(legacy, "drain", "default", "rate")
    fast = dig(legacy, "drain", "fast", "rate")
    redis_drain = dig(ours, "redis_drain", "rate")
    return [
        (
            f"Drain, PostgreSQL (msg/s; ours {sizes['drain_rows']:,} rows, defaults)",
            fmt(ours_drain),
            fmt(default) + " (defaults)",
            factor(ours_drain, default),
            "",
            "",
        ),
        (
            "Drain vs 8.5.0 at polling 0.01 s (msg/s)",
            fmt(ours_drain),
            fmt(fast) + " (0.01 s)",
            factor(ours_drain, fast),
            ">= 20x",
            verdict(ours_drain >= 20 * fast if both(ours_drain, fast) else None),
        ),
        (
            f"Drain, Redis (msg/s; {sizes['redis_drain_rows']:,} msgs) vs ours on PostgreSQL",
            f"{fmt(redis_drain)} ({factor(redis_drain, ours_drain)} of PG)",
            "-",
            "",
            ">= PG drain",
            verdict(redis_drain >= ours_drain if both(redis_drain, ours_drain) else None),
        ),
    ]


def write_rows(ours: dict[str, Any], legacy: dict[str, Any], sizes: dict[str, Any]) -> list[Row]:
    """Write path: ours with an event against the one-extra-plain-row reference of the same run."""
    rows: list[Row] = []
    for level in sizes["write_concurrency"]:
        key = f"c{level}"
        label = "sequential" if level == 1 else f"{level} concurrent"
        mine = dig(ours, "write", key, "ratio")
        reference = dig(ours, "write", key, "extra_row_ratio")
        share = mine / reference if both(mine, reference) and reference else None
        rows.append((
            f"Write path {label}: commits/s with event / without",
            f"{fmt(mine)} ({fmt(dig(ours, 'write', key, 'with_event_per_s'))}"
            f"/{fmt(dig(ours, 'write', key, 'without_event_per_s'))})",
            f"{fmt(dig(legacy, 'write', key, 'ratio'))} ({fmt(dig(legacy, 'write', key, 'with_event_per_s'))}"
            f"/{fmt(dig(legacy, 'write', key, 'without_event_per_s'))})",
            factor(dig(ours, "write", key, "with_event_per_s"), dig(legacy, "write", key, "with_event_per_s")),
            "",
            "",
        ))
        rows.append((
            f"  reference, {label}: one extra plain row instead of the event; ours as a share of it",
            f"{fmt(reference)}; ours at {'-' if share is None else f'{share:.3f}'}x of it",
            fmt(dig(legacy, "write", key, "extra_row_ratio")),
            "",
            f">= {WRITE_BAR}x",
            verdict(share >= WRITE_BAR if share is not None else None),
        ))
    return rows


def latency_rows(ours: dict[str, Any], legacy: dict[str, Any], sizes: dict[str, Any]) -> list[Row]:
    """In-process commit-to-send quantiles."""
    rows: list[Row] = []
    for quantile, bar in (("p50_ms", None), ("p99_ms", LATENCY_BAR_MS), ("max_ms", None)):
        mine = dig(ours, "latency", quantile)
        rows.append((
            f"Commit-to-send {quantile[:-3]} at {sizes['latency_rate']}/s, relay in the same process (ms)",
            fmt(mine),
            fmt(dig(legacy, "latency", quantile)),
            factor(dig(legacy, "latency", quantile), mine),
            "" if bar is None else f"<= {bar:.0f} ms",
            "" if bar is None else verdict(mine <= bar if both(mine) else None),
        ))
    return rows


def idle_rows(ours: dict[str, Any], legacy: dict[str, Any]) -> list[Row]:
    """Statements of an idle relay."""
    idle = dig(ours, "idle", "statements_per_s")
    return [(
        "Idle relay, statements/s (relay engine)",
        fmt(idle),
        fmt(dig(legacy, "idle", "statements_per_s")),
        factor(dig(legacy, "idle", "statements_per_s"), idle),
        "<= 1/s",
        verdict(idle <= 1.0 if both(idle) else None),
    )]


def claim_rows(ours: dict[str, Any], legacy: dict[str, Any], sizes: dict[str, Any]) -> list[Row]:
    """PostgreSQL claim cost over backlog sizes, keyless and keyed."""
    rows: list[Row] = []
    claim_sizes = sorted({*sizes["claim_sizes"], *sizes["legacy_claim_sizes"]})
    largest = max(sizes["claim_sizes"])
    for kind, bar in (("keyless", 10.0), ("keyed", 20.0)):
        for size in claim_sizes:
            mine = dig(ours, "claim", kind, str(size))
            theirs = dig(legacy, "claim", kind, str(size))
            mine_ms = dig(mine, "median_ms")
            theirs_ms = dig(theirs, "median_ms")
            ok: bool | None = None
            if size == largest and mine is not None:
                ok = both(mine_ms) and mine_ms < bar
                if kind == "keyed":
                    ok = ok and held_shape_valid(mine)
            rows.append((
                f"Claim 100, {kind}{' (1k keys, held hot key)' if kind == 'keyed' else ''}, {size:,} pending (ms)",
                fmt(mine_ms) + (keyed_note(mine) if kind == "keyed" else ""),
                fmt(theirs_ms),
                factor(theirs_ms, mine_ms),
                f"< {bar:.0f} ms" if size == largest else "",
                verdict(ok) if size == largest else "",
            ))
    return rows


def held_shape_valid(entry: dict[str, Any]) -> bool:
    """The keyed shape held: full claims, none of the held key, the hold never lost."""
    return entry["hot_key_returned"] == 0 and entry["returned_min"] > 0 and not entry.get("hold_lost")


def keyed_note(entry: dict[str, Any] | None) -> str:
    """What a keyed claim returned, and whether the other instance's hold stayed valid."""
    if entry is None:
        return ""
    hold = "HOLD LOST" if entry.get("hold_lost") else f"hold renewed {entry.get('hold_renewals', 0)}x"
    return f" [{entry['returned_min']} returned, {entry['hot_key_returned']} of held key; {hold}]"


def redis_claim_rows(ours: dict[str, Any], sizes: dict[str, Any]) -> list[Row]:
    """Redis claim cost growth from the smallest to the largest backlog."""
    return growth_rows("Redis", dig(ours, "redis_claim"), sorted(sizes["redis_claim_sizes"]))


def growth_rows(name: str, section: Any, sizes: list[int]) -> list[Row]:
    """``<name> claim 100``: median at the smallest and largest backlog, within 2x."""
    rows: list[Row] = []
    for kind in ("keyless", "keyed"):
        small = dig(section, kind, str(sizes[0]), "median_ms")
        large = dig(section, kind, str(sizes[-1]), "median_ms")
        growth = large / small if both(small, large) and small else None
        note = keyed_note(dig(section, kind, str(sizes[-1]))) if kind == "keyed" else ""
        ok = growth is not None and growth <= 2.0
        if kind == "keyed" and dig(section, kind, str(sizes[-1])) is not None:
            ok = ok and held_shape_valid(dig(section, kind, str(sizes[-1])))
        rows.append((
            f"{name} claim 100, {kind}: {sizes[0]:,} -> {sizes[-1]:,} pending (ms)",
            f"{fmt(small)} -> {fmt(large)} ({fmt(growth)}x){note}",
            "-",
            "",
            "within 2x",
            verdict(ok if growth is not None else None),
        ))
    return rows


def mongodb_rows(ours: dict[str, Any], sizes: dict[str, Any]) -> list[Row]:
    """MongoDB drain and claim growth, or why they did not run (never wire-server figures)."""
    not_run = dig(ours, "mongodb_drain", "not_run") or dig(ours, "mongodb_claim", "not_run")
    if not_run:
        return [("MongoDB (drain, claim 100)", f"not run: {not_run}", "-", "", "", "")]
    drain: Row = (
        f"Drain, MongoDB (msg/s; {sizes['mongodb_drain_rows']:,} msgs)",
        fmt(dig(ours, "mongodb_drain", "rate")), "-", "", "", "",
    )
    return [drain, *growth_rows("MongoDB", dig(ours, "mongodb_claim"), sorted(sizes["mongodb_claim_sizes"]))]


def correctness(entry: Any) -> str:
    """`` [lost 0, reordered 0, duplicates 0]`` of one relay-process scenario."""
    if not isinstance(entry, dict) or "lost" not in entry:
        return ""
    late = f", {entry['pending_at_deadline']} still pending at the deadline" if entry.get("pending_at_deadline") else ""
    return f" [lost {entry['lost']}, reordered {entry['reorderings']}, duplicates {entry['duplicates']}{late}]"


def scenario_cell(entry: Any, figure: str) -> str:
    """A scenario's figure, or why it did not run or finish."""
    if isinstance(entry, dict) and entry.get("not_run"):
        return f"not run: {entry['not_run']}"
    if isinstance(entry, dict) and entry.get("error"):
        return f"{figure}; INCOMPLETE: {entry['error']}"
    return figure


def within(seconds: Any, bar: float, entry: dict[str, Any]) -> bool | None:
    """Bar outcome of a recovery time: missed when the scenario did not finish in its deadline."""
    if entry.get("error"):
        return False
    return seconds <= bar if both(seconds) else None


def relay_rows(ours: dict[str, Any], sizes: dict[str, Any]) -> list[Row]:
    """Relay processes at defaults: drain 1 vs 3, SIGKILL, storage restart, cross-process latency."""
    if not any(dig(ours, s) for s in ("relays_drain", "relays_kill", "relays_restart", "relays_latency")):
        return []
    rows: list[Row] = []
    events = sizes["relays_events"]
    flush = sizes["relays_flush_seconds"] * 1000
    for name, label in BACKENDS:
        for keys in sizes["relays_keys"]:
            one = dig(ours, "relays_drain", name, f"1x{keys}")
            for relays in sizes["relays_counts"]:
                entry = dig(ours, "relays_drain", name, f"{relays}x{keys}")
                if entry is None:
                    continue
                speedup = one["seconds"] / entry["seconds"] if relays > 1 and one else None
                judged = relays == 3 and keys == 100
                figure = f"{fmt(entry['seconds'])} s ({fmt(entry['rate'])}/s)"
                if speedup is not None:
                    figure += f", {speedup:.2f}x faster than 1 relay"
                rows.append((
                    f"{label}: drain {events:,} over {keys:,} keys, {relays} relay process(es), {flush:.0f} ms flush",
                    scenario_cell(entry, figure + correctness(entry)),
                    "-",
                    "",
                    f">= {SPEEDUP_BAR}x 1 relay" if judged else "",
                    verdict(None if speedup is None else speedup >= SPEEDUP_BAR and not entry["error"]) if judged else "",
                ))
        kill = dig(ours, "relays_kill", name)
        if kill is not None:
            resumed = kill.get("resumed_seconds")
            # No key waited: the relay died between two batches, holding nothing,
            # so the figure says nothing about recovering its claims.
            held = kill.get("stalled_keys", 0) > 0 or bool(kill.get("error"))
            note = "" if held else "; the killed relay held no claim, figure not judged"
            if kill.get("attempts", 1) > 1:
                note += f"; attempt {kill['attempts']}, earlier kills landed between batches"
            rows.append((
                f"{label}: SIGKILL 1 of 3 relays mid-drain: every key delivered again after (s)",
                scenario_cell(
                    kill,
                    f"{fmt(resumed)} s ({kill.get('stalled_keys')} keys waited > 1 s{note})" + correctness(kill),
                ),
                "-",
                "",
                f"<= {KILL_BAR_S:.0f} s",
                verdict(within(resumed, KILL_BAR_S, kill) if held else None),
            ))
        restart = dig(ours, "relays_restart", name)
        if restart is not None:
            for what, field in (("the server accepted again", "resumed_after_accepting_seconds"),
                                ("the restart command", "resumed_after_command_seconds")):
                value = restart.get(field)
                figure = f"{fmt(value)} s"
                if field.endswith("command") and "down_seconds" in restart:
                    figure += f" (server down {fmt(restart['down_seconds'])} s)"
                rows.append((
                    f"{label}: storage restart mid-drain: deliveries resumed after {what} (s)",
                    scenario_cell(restart, figure + correctness(restart)),
                    "-",
                    "",
                    f"<= {RESTART_BAR_S:.0f} s",
                    verdict(within(value, RESTART_BAR_S, restart)),
                ))
        latency = dig(ours, "relays_latency", name)
        if latency is not None:
            p99 = latency.get("p99_ms")
            rows.append((
                f"{label}: commit-to-send, relay in another process, {sizes['relays_latency_rate']}/s: p50 / p99 / max (ms)",
                scenario_cell(
                    latency,
                    f"{fmt(latency.get('p50_ms'))} / {fmt(p99)} / {fmt(latency.get('max_ms'))}" + correctness(latency),
                ),
                "-",
                "",
                f"p99 <= {LATENCY_BAR_MS:.0f} ms",
                verdict(p99 <= LATENCY_BAR_MS if both(p99) else None),
            ))
    rows.append(exactness_row(ours))
    return rows


RAW_BAR = 0.6
"""Our adapter through one relay, as a share of its client library's raw confirmed-publish loop (issue 15)."""
PLUGIN_BARS = {"kafka": ("spakky_kafka", 3.0), "rabbitmq": ("spakky_rabbitmq", 20.0)}
"""Our adapter against the spakky 8.5 plugin's transport, per broker (issue 15)."""
BROKER_SCALE_BAR = 2.0
"""3 relays against 1 through each adapter (issue 15)."""


def rate_of(entry: Any) -> float | None:
    """A scenario's rate, or None when it did not run or did not finish."""
    return entry.get("rate") if isinstance(entry, dict) and not entry.get("error") else None


def broker_rows(ours: dict[str, Any]) -> list[Row]:
    """Through the broker: relay processes at defaults into Kafka (Tansu) and RabbitMQ, confirmed."""
    section = dig(ours, "broker_drain")
    if not isinstance(section, dict) or "events" not in section:
        return []
    events, batch = section["events"], section["batch"]
    noop = rate_of(section.get("noop"))
    rows: list[Row] = [(
        f"Through the broker: {events:,} events over {section['keys']} keys, 1 relay, no-op transport (msg/s)",
        scenario_cell(section["noop"], f"{fmt(noop)}" + correctness(section["noop"])), "-", "", "", "",
    )]
    for broker, label in (("kafka", "Kafka (Tansu here)"), ("rabbitmq", "RabbitMQ")):
        entry = section.get(broker)
        if not isinstance(entry, dict):
            continue
        one, three = rate_of(entry.get("ours_1")), rate_of(entry.get("ours_3"))
        raw_batched, raw_all = entry.get("raw_batched"), entry.get("raw_all")
        plugin_name, plugin_bar = PLUGIN_BARS[broker]
        plugin = entry.get(plugin_name, {})
        plugin_rate = rate_of(plugin)
        rows.append((
            f"{label}: raw confirmed-publish loop, batches of {batch} / all in flight (msg/s)",
            f"{fmt(raw_batched)} / {fmt(raw_all)}", "-", "", "", "",
        ))
        for key, what in (("ours_1", "1 relay"), ("ours_1_serial", "1 relay, BATCHES_IN_FLIGHT=1"),
                          ("ours_3", "3 relays"), ("ours_3_serial", "3 relays, BATCHES_IN_FLIGHT=1")):
            scenario = entry.get(key)
            if isinstance(scenario, dict):
                rows.append((
                    f"{label}: our adapter, {what} (msg/s)",
                    scenario_cell(scenario, fmt(rate_of(scenario)) + correctness(scenario)), "-", "", "", "",
                ))
        judged = raw_batched if isinstance(raw_batched, int | float) else None
        rows.append((
            f"{label}: ours (1 relay) / raw loop in batches of {batch} (/ all in flight; / no-op relay)",
            f"{factor(one, raw_batched)} ({factor(one, raw_all)}; {factor(one, noop)})", "-", "",
            f">= {RAW_BAR}x", verdict(one / judged >= RAW_BAR if one and judged else None),
        ))
        rows.append((
            f"{label}: ours / {plugin_name.replace('_', '-')} 8.5, 1 relay each",
            factor(one, plugin_rate) if plugin_rate else plugin.get("not_run", "-"),
            fmt(plugin_rate) if plugin_rate else "-", "",
            f">= {plugin_bar:.0f}x", verdict(one / plugin_rate >= plugin_bar if one and plugin_rate else None),
        ))
        rows.append((
            f"{label}: our adapter, 3 relays / 1 relay", factor(three, one), "-", "",
            f">= {BROKER_SCALE_BAR:.0f}x", verdict(three / one >= BROKER_SCALE_BAR if one and three else None),
        ))
    return rows


def relay_scenarios(ours: dict[str, Any]) -> list[dict[str, Any]]:
    """Every relay-process scenario that ran."""
    found: list[dict[str, Any]] = []
    for section in ("relays_drain", "relays_kill", "relays_restart", "relays_latency"):
        for name, _ in BACKENDS:
            entry = dig(ours, section, name)
            if section == "relays_drain" and isinstance(entry, dict):
                found += [e for e in entry.values() if isinstance(e, dict) and "lost" in e]
            elif isinstance(entry, dict) and "lost" in entry:
                found.append(entry)
    return found


def exactness_row(ours: dict[str, Any]) -> Row:
    """Lost and reordered events summed over every relay-process scenario (must be 0)."""
    scenarios = relay_scenarios(ours)
    lost = sum(e["lost"] for e in scenarios)
    reordered = sum(e["reorderings"] for e in scenarios)
    duplicates = sum(e["duplicates"] for e in scenarios)
    return (
        "Relay processes, every scenario: lost / reordered (duplicates)",
        f"{lost} / {reordered} ({duplicates}) over {len(scenarios)} scenarios",
        "-",
        "",
        "0 / 0",
        verdict(lost == 0 and reordered == 0 if scenarios else None),
    )


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
