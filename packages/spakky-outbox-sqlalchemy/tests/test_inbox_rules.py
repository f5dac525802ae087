"""The inbox conformance rules on the SQLAlchemy inbox, on every dialect."""

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import override

import pytest
from spakky.outbox.ports.inbox import IAsyncInboxStorage
from spakky.outbox.testing.inbox_conformance import *  # noqa: F403
from spakky.outbox.testing.inbox_harness import (
    AbstractInboxHarness,
    HandlerCall,
    RawInboxRecord,
)
from sqlalchemy import select, update

from .conftest import ASYNC_DRIVERS, driver_url
from .test_inbox import Inbox, opened_inbox


class SqlAlchemyInboxHarness(AbstractInboxHarness):
    """An inbox table and an effects table on one database."""

    lease_seconds = 0.5

    def __init__(self, box: Inbox) -> None:
        """Wrap the package tests' inbox helper."""
        self.box = box
        self.name = f"sqlalchemy-{box.outbox.connections.connection.dialect.name}"

    @override
    def inbox(self) -> IAsyncInboxStorage:
        return self.box.storage()

    @override
    async def run_handler(self, call: HandlerCall) -> bool:
        return await self.box.handle(
            call.inbox,
            call.message_id,
            call.effect,
            consumer=call.consumer,
            fail=call.fail,
            before_commit=call.before_commit,
        )

    @override
    async def records(self) -> list[RawInboxRecord]:
        return [RawInboxRecord(c, m, leased) for c, m, leased in await self.box.rows()]

    @override
    async def effects(self) -> list[str]:
        return await self.box.effect_rows()

    @override
    async def backdate(self, consumer: str, message_id: str, seconds: float) -> None:
        table = self.box.table
        key = (table.c.consumer == consumer, table.c.message_id == message_id)
        async with self.box.outbox.connections.connection.begin() as connection:
            recorded = (await connection.execute(select(table.c.recorded_at).where(*key))).scalar_one()
            await connection.execute(
                update(table).where(*key).values(recorded_at=recorded - timedelta(seconds=seconds))
            )


@pytest.fixture(params=ASYNC_DRIVERS)
async def inbox_harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlAlchemyInboxHarness]:
    """A fresh inbox on each database."""
    async with opened_inbox(driver_url(request, request.param, tmp_path), create_table=True) as box:
        yield SqlAlchemyInboxHarness(box)
