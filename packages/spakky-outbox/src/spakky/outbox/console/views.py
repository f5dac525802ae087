"""How the console shows values: time and age filters for pages, documents for the JSON API.

The API's documents follow the rules of the command's ``--json`` output (one
line, ASCII, fields only ever added, ISO times with offset, ages in seconds,
null when absent) and reuse its documents where they overlap.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import cast

from spakky.outbox.cli import render
from spakky.outbox.common.config import redact_credentials, secret_name
from spakky.outbox.common.stats import KeyHead, MessageDetail
from spakky.outbox.console.operations import (
    Delivery,
    FailureGroup,
    FailureGroups,
    KeyPage,
    MessageState,
    Overview,
    message_state,
)

REDACTED = "***"
"""What the console shows instead of a secret."""
PAYLOAD_SHOWN_BYTES = 64 * 1024
"""Largest payload a message's page shows; a larger one is only measured."""


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
    document["relays"] = (
        None
        if overview.relays is None
        else [
            {"relay": relay_id(r.owner), "held": r.held, "claims_until": _time(r.until)}
            for r in overview.relays
        ]
    )
    document["delivery"] = None if overview.delivery is None else delivery_json(overview.delivery)
    return document


def delivery_json(delivery: Delivery) -> dict[str, render.JsonValue]:
    """The overview's ``delivery``: the relays' own figures per minute over the last hour, oldest first."""
    slots: list[render.JsonValue] = [
        {
            "start": _time(slot.start),
            "sent": slot.sent,
            "sent_per_second": round(slot.sent_per_second, 3),
            "refused": slot.refused,
            "abandoned": slot.abandoned,
            "batches": slot.batches,
            "relays": slot.relays,
            "commit_to_send_p50_seconds": slot.p50,
            "commit_to_send_p95_seconds": slot.p95,
            "commit_to_send_max_seconds": slot.commit_to_send_max if slot.sent else None,
        }
        for slot in delivery.slots
    ]
    return {
        "slot_seconds": delivery.slots[0].seconds if delivery.slots else None,
        "windows": delivery.windows,
        "complete": delivery.complete,
        "sent": delivery.sent,
        "commit_to_send_p50_seconds": delivery.p50,
        "commit_to_send_p95_seconds": delivery.p95,
        "slots": slots,
    }


CHART_WIDTH = 600
"""Width of each delivery chart (SVG user units)."""
CHART_HEIGHT = 120
"""Height of each delivery chart (SVG user units)."""


@dataclass(frozen=True)
class Bar:
    """One bar of the delivery-rate chart."""

    x: float
    y: float
    width: float
    height: float
    title: str


def points(line: list[tuple[float, float]]) -> str:
    """A chart line as the ``points`` of an SVG polyline."""
    return " ".join(f"{x},{y}" for x, y in line)


@dataclass(frozen=True)
class DeliveryChart:
    """The overview's two inline SVG charts: sent/s per minute, and commit-to-send p50/p95 per minute."""

    bars: list[Bar]
    top_rate: float
    """Sent/s at the top of the rate chart."""
    p50: list[tuple[float, float]]
    """Points (x, y) of the median wait, one per minute with sends."""
    p95: list[tuple[float, float]]
    """Points (x, y) of the 95th percentile wait."""
    top_wait: float
    """Seconds at the top of the wait chart."""


def delivery_chart(delivery: Delivery) -> DeliveryChart:
    """Geometry of the overview's delivery charts (no script: the page draws them as inline SVG)."""
    slots = delivery.slots
    step = CHART_WIDTH / max(1, len(slots))
    top_rate = max((slot.sent_per_second for slot in slots), default=0.0) or 1.0
    waits = [w for slot in slots for w in (slot.p50, slot.p95) if w is not None]
    top_wait = max(waits, default=0.0) or 1.0
    bars = [
        Bar(
            x=round(index * step + 1, 2),
            y=round(CHART_HEIGHT - slot.sent_per_second / top_rate * CHART_HEIGHT, 2),
            width=round(max(1.0, step - 2), 2),
            height=round(slot.sent_per_second / top_rate * CHART_HEIGHT, 2),
            title=f"{when(slot.start)}: {slot.sent} sent, {slot.sent_per_second:.1f}/s",
        )
        for index, slot in enumerate(slots)
        if slot.sent
    ]

    def line(values: list[float | None]) -> list[tuple[float, float]]:
        return [
            (round(index * step + step / 2, 1), round(CHART_HEIGHT - value / top_wait * CHART_HEIGHT, 1))
            for index, value in enumerate(values)
            if value is not None
        ]

    return DeliveryChart(
        bars=bars,
        top_rate=top_rate,
        p50=line([slot.p50 for slot in slots]),
        p95=line([slot.p95 for slot in slots]),
        top_wait=top_wait,
    )


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


def relay_id(owner: str) -> str:
    """A relay instance as the console names it: the start of its owner token."""
    return owner[:RELAY_ID_CHARS]


def relay(owner: str | None) -> str | None:
    """`relay_id` of ``owner``; None when there is none."""
    return None if owner is None else relay_id(owner)


def why(detail: MessageDetail) -> str:
    """Where the message stands, in one sentence; for a key's head, why the key is not moving."""
    state, message = message_state(detail), detail.message
    if state is MessageState.PUBLISHED:
        return f"published at {when(message.published_at)}"
    failed = f"; last error: {message.last_error}" if message.last_error else ""
    if state is MessageState.ABANDONED:
        return f"abandoned at {when(message.abandoned_at)} after {render.delivery_attempts(message)} attempt(s){failed}"
    if state is MessageState.CLAIMED:
        return f"claimed by relay {relay(detail.claimed_by)}, its claim runs until {when(detail.lease_until)}"
    if state is MessageState.RETRYING:
        return f"retrying at {when(detail.not_before)} after {message.retry_count} failed attempt(s){failed}"
    if message.retry_count:
        return f"waiting for a relay after {message.retry_count} failed attempt(s){failed}"
    return "waiting for a relay"


def key_json(head: KeyHead) -> dict[str, render.JsonValue]:
    """One key and its head."""
    message = head.message
    return {
        "partition_key": message.partition_key,
        "state": message_state(head).value,
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


def shown_headers(headers: dict[str, str]) -> list[tuple[str, str]]:
    """Headers by name, each secret one (by its name) as `REDACTED`, URL credentials removed from the rest."""
    return [(name, REDACTED if secret_name(name) else redact_credentials(value)) for name, value in sorted(headers.items())]


def _redacted(value: object) -> object:
    """A decoded JSON value with every field of a secret name redacted, at any depth."""
    if isinstance(value, dict):
        fields = cast(dict[str, object], value)
        return {name: REDACTED if secret_name(name) else _redacted(v) for name, v in fields.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in cast(list[object], value)]
    if isinstance(value, str):
        return redact_credentials(value)
    return value


class PayloadForm(StrEnum):
    """How a payload is shown."""

    JSON = "json"
    """Parsed, secrets redacted, indented."""
    TEXT = "text"
    """UTF-8 text that is not JSON, URL credentials removed."""
    HEX = "hex"
    """Bytes that are not UTF-8, as hexadecimal."""
    TOO_LARGE = "too_large"
    """Larger than `PAYLOAD_SHOWN_BYTES`: not shown (a cut JSON document could not be redacted)."""


@dataclass(frozen=True)
class ShownPayload:
    """A payload as the console may show it."""

    form: PayloadForm
    size: int
    """Its length in bytes, as stored."""
    text: str
    """What is shown (empty when too large)."""

    @property
    def lines(self) -> list[str]:
        """The text split at its line breaks only, for pages to escape line by line."""
        return self.text.split("\n")


def shown_payload(payload: bytes) -> ShownPayload:
    """``payload`` with its secrets redacted, in the form it can be read in."""
    size = len(payload)
    if size > PAYLOAD_SHOWN_BYTES:
        return ShownPayload(PayloadForm.TOO_LARGE, size, "")
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        return ShownPayload(PayloadForm.HEX, size, payload.hex(" "))
    try:
        document: object = json.loads(text)
    except ValueError:
        return ShownPayload(PayloadForm.TEXT, size, redact_credentials(text))
    return ShownPayload(PayloadForm.JSON, size, json.dumps(_redacted(document), indent=2, ensure_ascii=False))


def message_json(detail: MessageDetail, show_payloads: bool) -> dict[str, render.JsonValue]:
    """``GET /api/messages/<id>``: the message, where it stands, and its payload and headers when shown."""
    message = detail.message
    document: dict[str, render.JsonValue] = {
        "id": str(message.id),
        "event_name": message.event_name,
        "partition_key": message.partition_key,
        "state": message_state(detail).value,
        "why": why(detail),
        "retry_count": message.retry_count,
        "last_error": message.last_error,
        "created_at": _time(message.created_at),
        "claimed_at": _time(message.claimed_at),
        "published_at": _time(message.published_at),
        "abandoned_at": _time(message.abandoned_at),
        "relay": relay(detail.claimed_by),
        "claim_until": _time(detail.lease_until),
        "retry_at": _time(detail.not_before),
        "payload_size": len(message.payload),
        "payloads_shown": show_payloads,
        "headers": None,
        "payload": None,
    }
    if show_payloads:
        payload = shown_payload(message.payload)
        document["headers"] = dict(shown_headers(message.headers))
        document["payload"] = {"form": payload.form.value, "text": payload.text}
    return document
