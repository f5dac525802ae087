"""The audit log of the console's actions: who changed what, and how many messages.

Every action the console carries out is written to the ``spakky.outbox.audit``
logger (one line per action, for the log stream the service already ships)
and kept by an `IAsyncConsoleAuditLog` so the console can show it.
`ProcessAuditLog` keeps the latest entries of this process.
"""

import json
import logging
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import override

audit_logger = logging.getLogger("spakky.outbox.audit")

PROCESS_AUDIT_ENTRIES = 1_000
"""Entries `ProcessAuditLog` keeps (the oldest are dropped first)."""


@dataclass(frozen=True)
class AuditEntry:
    """One action an operator carried out."""

    at: datetime
    """When it finished."""
    actor: str
    """Who: the name given at sign-in (or the API caller's), and the client address."""
    action: str
    """What: ``requeue``, ``purge-published``."""
    scope: str
    """On which messages: ``message <id>``, ``3 selected``, ``group <fingerprint>``, ``all``, a cutoff."""
    affected: int
    """How many messages it changed."""

    def document(self) -> dict[str, str | int]:
        """The entry as the JSON API and the log stream show it."""
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "scope": self.scope,
            "affected": self.affected,
        }

    def to_line(self) -> str:
        """The entry as one JSON line (ASCII), as written to the log stream."""
        return json.dumps(self.document(), ensure_ascii=True)


class IAsyncConsoleAuditLog(ABC):
    """Where the console keeps its audit entries."""

    @abstractmethod
    async def record(self, entry: AuditEntry) -> None:
        """Keep ``entry``."""

    @abstractmethod
    async def latest(self, limit: int) -> list[AuditEntry]:
        """Up to ``limit`` entries, newest first."""


class ProcessAuditLog(IAsyncConsoleAuditLog):
    """Keeps the latest `PROCESS_AUDIT_ENTRIES` entries of this process in memory."""

    def __init__(self, capacity: int = PROCESS_AUDIT_ENTRIES) -> None:
        """Keep at most ``capacity`` entries."""
        self._entries: deque[AuditEntry] = deque(maxlen=capacity)

    @override
    async def record(self, entry: AuditEntry) -> None:
        self._entries.appendleft(entry)

    @override
    async def latest(self, limit: int) -> list[AuditEntry]:
        return list(self._entries)[:limit]
