"""Failure fingerprints: abandoned messages that failed the same way share one.

A fingerprint is the error type plus the error message with what varies from
one message to the next (ids, numbers, quoted values, addresses) replaced by
placeholders, hashed to a short stable id. Operators see one line per kind of
failure instead of one per message, the way Wolverine groups dead letters.
"""

import hashlib
import re
from dataclasses import dataclass

_UNDECODABLE = "undecodable stored message: "
"""Prefix of `spakky.outbox.backend.claims.undecodable_reason`, kept as part of the type."""
_TYPE = re.compile(r"^(?P<type>[A-Za-z_][A-Za-z0-9_.]*): ")
"""``ErrorType: `` at the start of a reason (the relay writes ``type(error).__name__: message``)."""
_PLACEHOLDERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://\S+"), "<url>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<address>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<value>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)
PATTERN_LENGTH = 200
"""Longest normalised message kept in a pattern."""
FINGERPRINT_LENGTH = 16
"""Hex digits of a fingerprint (64 bits: collisions are not a practical concern)."""


@dataclass(frozen=True)
class FailureKind:
    """What a failure fingerprint stands for."""

    fingerprint: str
    """Short stable id of the kind (hex)."""
    error_type: str
    """Error type named by the reason (``EventDeliveryRejectedError``), or ``unknown``."""
    pattern: str
    """The reason's message with varying parts replaced by placeholders (``<n>``, ``<uuid>``)."""


def normalise(message: str) -> str:
    """``message`` with ids, numbers, quoted values and addresses replaced by placeholders."""
    for pattern, placeholder in _PLACEHOLDERS:
        message = pattern.sub(placeholder, message)
    return message.strip()[:PATTERN_LENGTH]


def failure_kind(reason: str | None) -> FailureKind:
    """Classify an abandoned message's reason (its ``last_error``; None when it kept none)."""
    if reason is None:
        error_type, message = "unknown", "no reason kept"
    else:
        prefix = ""
        if reason.startswith(_UNDECODABLE):
            prefix, reason = _UNDECODABLE, reason[len(_UNDECODABLE) :]
        if match := _TYPE.match(reason):
            error_type, message = prefix + match.group("type"), reason[match.end() :]
        else:
            error_type, message = prefix.rstrip(": ") or "unknown", reason
    pattern = normalise(message)
    digest = hashlib.sha256(f"{error_type}\n{pattern}".encode()).hexdigest()
    return FailureKind(digest[:FINGERPRINT_LENGTH], error_type, pattern)


def failure_fingerprint(reason: str | None) -> str:
    """The fingerprint of a reason; storages keep it with the message when they abandon it."""
    return failure_kind(reason).fingerprint
