"""The inbox drill's handler: books each event once with the inbox, logging every delivery beside it.

`Bookings.book` is what a user writes: ``@Transactional()``,
``@Idempotent()``, one business row per event through spakky-sqlalchemy's
session, so the row and the inbox record commit together. The drill's own
instruments write outside that transaction, on a connection pool of their
own (`DrillLog`, autocommit): a row per delivery the consumer got, duplicates
included, and a row per delivery the inbox skipped. With the drill's
``hold-in-handler`` file present, the next handler call stops after its
business write, before the commit, until the drill SIGKILLs the process.
"""

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import override

from spakky.core.common.mutability import immutable
from spakky.core.pod.annotations.pod import Pod
from spakky.data.aspects.transactional import Transactional
from spakky.domain.models.event import AbstractIntegrationEvent
from spakky.event.stereotype.event_handler import EventHandler, on_event
from spakky.outbox.inbox import Idempotent
from spakky.outbox.inbox.identity import message_identity
from spakky.plugins.sqlalchemy.persistency.session_manager import AsyncSessionManager
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.faults.sink import HOLD_IN_HANDLER, claim_hold, report_held

DESTINATION_ENV = "INBOX_DRILL_DESTINATION"
"""The queue or topic of this run: the events' name."""
TABLES_ENV = "INBOX_DRILL_TABLES"
"""Prefix of this run's tables (effects, deliveries, skips)."""
CONTROL_ENV = "INBOX_DRILL_CONTROL"
"""The drill's control directory (holds)."""
DB_URL_ENV = "SPAKKY_SQLALCHEMY__CONNECTION_STRING"
CONSUMER = "inbox-drill"
"""The inbox consumer name of the handler."""


@immutable
class InboxDrillEvent(AbstractIntegrationEvent):
    """Event ``seq`` of key ``key``."""

    key: str
    seq: int

    @property
    @override
    def event_name(self) -> str:
        """This run's queue or topic (spakky's consumers read the name from the class)."""
        return os.environ.get(DESTINATION_ENV, "InboxDrillEvent")

    @property
    @override
    def partition_key(self) -> str | None:
        """A key's events stay in order."""
        return self.key


@dataclass(frozen=True)
class DrillTables:
    """This run's tables: no unique key anywhere, so a duplicated effect shows."""

    effects: Table
    """One row per business effect (what the handler writes in its transaction)."""
    deliveries: Table
    """One row per delivery the consumer got, written before the handler runs."""
    skips: Table
    """One row per delivery the inbox skipped (a duplicate)."""

    @classmethod
    def named(cls, prefix: str) -> "DrillTables":
        """The tables ``<prefix>_effects``, ``_deliveries`` and ``_skips``."""
        metadata = MetaData()

        def table(name: str, *columns: Column[object]) -> Table:
            return Table(
                f"{prefix}_{name}",
                metadata,
                Column("id", BigInteger, primary_key=True, autoincrement=True),
                *columns,
                Column("pid", Integer, nullable=False),
            )

        return cls(
            effects=table("effects", Column("key", String(16)), Column("seq", Integer)),
            deliveries=table(
                "deliveries", Column("key", String(16)), Column("seq", Integer), Column("message_id", String(64))
            ),
            skips=table("skips", Column("message_id", String(64))),
        )

    @property
    def metadata(self) -> MetaData:
        """The metadata holding the three tables (create, drop)."""
        metadata = self.effects.metadata
        assert metadata is not None
        return metadata


@Pod()
class DrillLog:
    """The drill's instruments: rows written outside any handler transaction (autocommit)."""

    def __init__(self) -> None:
        """Log into this run's tables, on a pool of its own."""
        self.tables = DrillTables.named(os.environ[TABLES_ENV])
        self._engine: AsyncEngine | None = None

    def _connections(self) -> AsyncEngine:
        # Created at first use, on the application's loop.
        if self._engine is None:
            self._engine = create_async_engine(
                os.environ[DB_URL_ENV], isolation_level="AUTOCOMMIT", pool_size=4, max_overflow=0, pool_timeout=600
            )
        return self._engine

    async def delivered(self, event: InboxDrillEvent) -> None:
        """Note one delivery of ``event`` under the identity the inbox will use."""
        async with self._connections().connect() as connection:
            await connection.execute(
                insert(self.tables.deliveries).values(
                    key=event.key, seq=event.seq, message_id=message_identity(event), pid=os.getpid()
                )
            )

    async def skipped(self, message_id: str) -> None:
        """Note one delivery the inbox skipped."""
        async with self._connections().connect() as connection:
            await connection.execute(insert(self.tables.skips).values(message_id=message_id, pid=os.getpid()))


@Pod()
class Bookings:
    """Books each `InboxDrillEvent` once: one effect row, in a transaction with the inbox record."""

    def __init__(self, sessions: AsyncSessionManager, log: DrillLog) -> None:
        """Write effects through the application's session."""
        self._sessions = sessions
        self._tables = log.tables
        self._control = Path(os.environ[CONTROL_ENV])

    @Transactional()
    @Idempotent(consumer=CONSUMER)
    async def book(self, event: InboxDrillEvent) -> None:
        """Write the event's effect; stop before the commit when the drill holds this call."""
        await self._sessions.session.execute(
            insert(self._tables.effects).values(key=event.key, seq=event.seq, pid=os.getpid())
        )
        held = claim_hold(self._control, HOLD_IN_HANDLER)
        if held is not None:
            report_held(held, [f"{event.key} {event.seq}"])
            await asyncio.Event().wait()  # until the drill's SIGKILL


@EventHandler()
class InboxDrillConsumer:
    """Logs each delivery, then books it through `Bookings`.

    The idempotent transaction is on another pod because spakky-rabbitmq and
    spakky-kafka 8.5 register no method of an ``@EventHandler`` that aspects
    wrap: their post-processors run after Spakky's aspect post-processor and
    list the handler's methods with ``inspect.ismethod``, which the aspect
    proxy's method wrappers are not. ``@Transactional()`` on an ``@on_event``
    method therefore never receives a broker's events.
    """

    def __init__(self, bookings: Bookings, log: DrillLog) -> None:
        """Book through ``bookings``; log through the drill's pool."""
        self._bookings = bookings
        self._log = log

    @on_event(InboxDrillEvent)
    async def on_delivered(self, event: InboxDrillEvent) -> None:
        """Log the delivery (outside any transaction), then book the event once."""
        await self._log.delivered(event)
        await self._bookings.book(event)
