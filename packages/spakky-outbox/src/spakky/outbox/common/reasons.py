"""The text kept with a message as its last error: storable by every backend, never a secret.

A transport's error text can repeat anything: a payload value with a lone
surrogate (no UTF-8 encoder takes it), a NUL byte (PostgreSQL text refuses it),
a whole response body (more than a MariaDB ``TEXT`` holds), a URL with a
password. The relay renders every reason through `storable_reason` once, so
no storage ever receives a text it cannot write and no credential is stored,
logged or printed.
"""

from spakky.outbox.common.config import redact_credentials

MAX_REASON_BYTES = 4096
"""Longest stored reason, in UTF-8 bytes; far below the smallest column of any backend."""
_HEAD_CHARS = MAX_REASON_BYTES + 1024
"""How much of a text is redacted and escaped: all a stored reason can keep, plus room
for a credential that starts before the cut and ends after it."""
_TRUNCATED = " ... [{} bytes cut]"
"""Appended to a reason cut at `MAX_REASON_BYTES`."""


def storable_reason(text: str) -> str:
    r"""``text`` made storable everywhere: credentials redacted, unencodable parts escaped, bounded.

    Lone surrogates become ``\udcff``-style escapes and NUL bytes ``\x00``
    (the rest of the text is kept as it was); a text longer than
    `MAX_REASON_BYTES` in UTF-8 is cut at a character boundary and says how
    much was cut.
    """
    # Only the head can be kept: redacting and escaping the rest (a whole
    # response body) would cost time for nothing.
    whole = len(text) <= _HEAD_CHARS
    head = redact_credentials(text[: _HEAD_CHARS]).replace("\x00", "\\x00")
    encoded = head.encode("utf-8", "backslashreplace")
    if whole and len(encoded) <= MAX_REASON_BYTES:
        return encoded.decode("utf-8")
    total = len(encoded) + len(text[_HEAD_CHARS :].encode("utf-8", "backslashreplace"))
    marker = _TRUNCATED.format(total)
    kept = encoded[: MAX_REASON_BYTES - len(marker.encode())].decode("utf-8", "ignore")
    return kept + _TRUNCATED.format(total - len(kept.encode()))


def ascii_reason(text: str) -> str:
    """A storable reason with every non-ASCII character escaped, for a column that refuses them."""
    return storable_reason(text).encode("ascii", "backslashreplace").decode("ascii")[:MAX_REASON_BYTES]

