"""What the command and the console print: stored text made safe for a terminal, and the ``--json`` documents.

Stored fields (event names, partition keys, error texts) come from
applications and brokers, not from the operator: a control character in one
could clear the screen or forge an output line. Every field printed as text
goes through `printable`; ``--json`` output escapes everything outside ASCII.
"""

import json
import unicodedata
from datetime import datetime

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxStats, OutboxTarget
from spakky.outbox.delivery.batch import BrokerState
from spakky.outbox.relay.health import BrokerHealth, OutboxHealth

_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Controls, format characters (bidi overrides), surrogates, private, unassigned, line/paragraph separators."""
_UNDECODABLE_PREFIX = "undecodable stored message: "
"""Start of `spakky.outbox.backend.claims.undecodable_reason`."""

type JsonValue = str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None


def printable(text: str) -> str:
    r"""Return ``text`` on one line, every control character escaped (``\x1b``, ``\n``, ``\u202e``).

    Backslashes are doubled, so an escape in the output always stands for an
    escaped character, never for a backslash stored in the text.
    """
    return "".join(_escape(ch) if _needs_escape(ch) else ch for ch in text)


def _needs_escape(ch: str) -> bool:
    return ch == "\\" or unicodedata.category(ch) in _ESCAPED_CATEGORIES


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def delivery_attempts(message: OutboxMessage) -> int:
    """How many deliveries of an abandoned message the transport refused.

    The relay abandons on the refusal that exhausts the budget without
    spending a retry on it, so an abandoned message's ``retry_count`` is one
    less than its refusals (5 refusals with ``MAX_RETRY_COUNT=5`` leave
    ``retry_count=4``). A message abandoned because it could not be decoded
    was never sent.
    """
    if message.last_error is not None and message.last_error.startswith(_UNDECODABLE_PREFIX):
        return 0
    return message.retry_count + 1


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def to_json(document: dict[str, JsonValue]) -> str:
    """One JSON document on one line, ASCII only."""
    return json.dumps(document, ensure_ascii=True)


def target_json(target: OutboxTarget) -> dict[str, JsonValue]:
    """``{"backend", "location", "defaulted"}``."""
    return {"backend": target.backend, "location": target.location, "defaulted": list(target.defaulted)}


def target_line(target: OutboxTarget) -> str:
    """``target: <backend> <location>`` and the settings left at their defaults."""
    line = f"target: {printable(target.backend)} {printable(target.location)}"
    if target.defaulted:
        line += f" (left at defaults: {printable(', '.join(target.defaulted))})"
    return line


def stats_json(target: OutboxTarget, stats: OutboxStats) -> dict[str, JsonValue]:
    """The ``status --json`` document."""
    return {
        "target": target_json(target),
        "pending": stats.pending,
        "claimed": stats.claimed,
        "published": stats.published,
        "abandoned": stats.abandoned,
        "oldest_pending_age_seconds": stats.oldest_pending_age_seconds,
        "count_cap": stats.count_cap,
        "at_least": list(stats.capped),
    }


def abandoned_json(target: OutboxTarget, messages: list[OutboxMessage]) -> dict[str, JsonValue]:
    """The ``abandoned --json`` document; payloads and headers are never shown."""
    return {
        "target": target_json(target),
        "messages": [
            {
                "id": str(m.id),
                "event_name": m.event_name,
                "partition_key": m.partition_key,
                "created_at": _time(m.created_at),
                "abandoned_at": _time(m.abandoned_at),
                "attempts": delivery_attempts(m),
                "last_error": m.last_error,
            }
            for m in messages
        ],
    }


def health_json(
    target: OutboxTarget, health: OutboxHealth, max_pending_age_seconds: float | None
) -> dict[str, JsonValue]:
    """The ``health --json`` document."""
    return {
        "target": target_json(target),
        "healthy": health.healthy,
        "storage_reachable": health.storage_reachable,
        "relay_running": health.relay_running,
        "seconds_since_last_cycle": health.seconds_since_last_cycle,
        "oldest_pending_age_seconds": health.oldest_pending_age_seconds,
        "max_pending_age_seconds": max_pending_age_seconds,
        "problems": list(health.problems),
        "broker": broker_json(health.broker),
    }


def broker_json(broker: BrokerHealth | None) -> JsonValue:
    """The delivery adapter's broker connection in ``health --json`` (null without an adapter in this process)."""
    if broker is None:
        return None
    return {
        "broker": broker.broker,
        "target": broker.target,
        "state": str(broker.state),
        "since": _time(broker.since),
        "seconds_in_state": broker.seconds_in_state,
        "last_error": broker.last_error,
    }


def broker_phrase(broker: BrokerHealth) -> str:
    """``broker kafka host:9092 (SSL) connected`` / ``… reconnecting since <UTC> (…s; last error: …)``."""
    where = f"broker {broker.target}"
    match broker.state:
        case BrokerState.CONNECTED:
            return f"{where} connected"
        case BrokerState.DOWN:
            return (
                f"{where} reconnecting since {_time(broker.since)} ({broker.seconds_in_state:.1f}s; "
                f"last error: {broker.last_error or 'unknown'})"
            )
        case BrokerState.NOT_CONNECTED:
            return f"{where} not connected yet"


def health_line(health: OutboxHealth) -> str:
    """``healthy: …`` or ``unhealthy: <problem>; <problem>``."""
    broker = "" if health.broker is None else f"; {broker_phrase(health.broker)}"
    if not health.healthy:
        return f"unhealthy: {printable('; '.join(health.problems) + broker)}"
    if health.storage_reachable is None:
        return printable(f"healthy: the storage cannot report its state (no administration capability){broker}")
    age = health.oldest_pending_age_seconds
    backlog = "nothing pending" if age is None else f"oldest pending message {age:.1f}s old"
    return printable(f"healthy: storage reachable, {backlog}{broker}")
