"""How the console shows values: time and age filters for pages, documents for the JSON API.

The API's documents follow the rules of the command's ``--json`` output (one
line, ASCII, fields only ever added, ISO times with offset, ages in seconds,
null when absent) and reuse its documents where they overlap.
"""

from datetime import UTC, datetime

from spakky.outbox.cli import render
from spakky.outbox.common.stats import KeyHead
from spakky.outbox.console.operations import (
    FailureGroup,
    FailureGroups,
    KeyPage,
    KeyState,
    Overview,
    key_state,
)


def when(value: datetime | None) -> str:
    """A time as ``2026-01-31 09:12:03 UTC``; ``-`` when absent."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: float | None) -> str:
    """An age or duration as ``0.8 s``, ``12 min``, ``3.1 h``, ``2.0 d``; ``-`` when absent."""
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    if value < 172_800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86_400:.1f} d"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def overview_json(
    overview: Overview, max_pending_age_seconds: float | None, can_act: bool
) -> dict[str, render.JsonValue]:
    """``GET /api/overview``: the ``status --json`` document plus the health verdict."""
    document = render.stats_json(overview.target, overview.stats)
    document["health"] = (
        None
        if overview.health is None
        else render.health_json(overview.target, overview.health, max_pending_age_seconds)
    )
    document["read_only"] = not can_act
    return document


def group_json(group: FailureGroup) -> dict[str, render.JsonValue]:
    """One failure group."""
    return {
        "fingerprint": group.kind.fingerprint,
        "error_type": group.kind.error_type,
        "pattern": group.kind.pattern,
        "count": group.count,
        "first_seen": _time(group.first_seen),
        "last_seen": _time(group.last_seen),
        "sample_reason": group.sample_reason,
        "sample_id": str(group.sample_id),
    }


def groups_json(groups: FailureGroups) -> dict[str, render.JsonValue]:
    """``GET /api/failure-groups``."""
    return {
        "groups": [group_json(g) for g in groups.groups],
        "scanned": groups.scanned,
        "abandoned": groups.abandoned,
        "complete": groups.complete,
    }



RELAY_ID_CHARS = 8
"""How much of a relay instance's owner token the console shows: enough to tell relays apart."""


def relay(owner: str | None) -> str | None:
    """A relay instance as the console names it: the start of its owner token."""
    return None if owner is None else owner[:RELAY_ID_CHARS]


def why(head: KeyHead) -> str:
    """Why the key of ``head`` is not moving, in one sentence."""
    state, message = key_state(head), head.message
    if state is KeyState.CLAIMED:
        return f"claimed by relay {relay(head.claimed_by)}, its claim runs until {when(head.lease_until)}"
    failed = f"; last error: {message.last_error}" if message.last_error else ""
    if state is KeyState.RETRYING:
        return f"retrying at {when(head.not_before)} after {message.retry_count} failed attempt(s){failed}"
    if message.retry_count:
        return f"waiting for a relay after {message.retry_count} failed attempt(s){failed}"
    return "waiting for a relay"


def key_json(head: KeyHead) -> dict[str, render.JsonValue]:
    """One key and its head."""
    message = head.message
    return {
        "partition_key": message.partition_key,
        "state": key_state(head).value,
        "why": why(head),
        "message_id": str(message.id),
        "event_name": message.event_name,
        "created_at": _time(message.created_at),
        "retry_count": message.retry_count,
        "last_error": message.last_error,
        "relay": relay(head.claimed_by),
        "claim_until": _time(head.lease_until),
        "retry_at": _time(head.not_before),
    }


def keys_json(page: KeyPage) -> dict[str, render.JsonValue]:
    """``GET /api/keys``."""
    return {
        "keys": [key_json(h) for h in page.heads],
        "after": None if page.after is None else str(page.after),
        "next_after": None if page.next_after is None else str(page.next_after),
    }
