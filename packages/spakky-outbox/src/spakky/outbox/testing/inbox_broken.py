"""Inbox mistakes any backend can make, as mixins: a backend's tests put one before its inbox to see a rule catch it.

``class SweepUnbounded(inbox_broken.SweepUnbounded, MyInboxStorage)`` is the
backend's inbox with that one mistake; run the rule it breaks on it (see
`spakky.outbox.testing.inbox_conformance`) and expect the rule to fail.
"""

from datetime import datetime
from typing import override

from spakky.outbox.ports.inbox import IAsyncInboxStorage


class SweepUnbounded(IAsyncInboxStorage):
    """Sweeps every old record at once, whatever the limit (breaks the bounded-batches sweep rule)."""

    @override
    async def purge(self, before: datetime, limit: int = 10_000) -> int:
        """Purge with the limit ignored."""
        return await super().purge(before, 10**6)
