"""Operations of one table on an async engine, each in a short transaction of its own.

Its twin ``sync_tables`` is generated (``make unasync``); what the drivers
really do differently is a hand-written pair of functions in `tables`.
"""

from collections.abc import Callable
from dataclasses import dataclass

from spakky.plugins.outbox_sqlalchemy.tables import (
    TableKeeper,
    engine_of_async,
    mark_table_created,
    within_async,
)
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(frozen=True)
class AsyncTableRunner:
    """Runs operations of a `TableKeeper`'s table on an async engine; creates the table on first use."""

    engine: AsyncEngine
    keeper: TableKeeper

    async def ensure_table(self) -> None:
        """Create the table unless this process knows it exists (see `TableKeeper.must_create`)."""
        keeper, engine = self.keeper, engine_of_async(self.engine)
        if not keeper.must_create(engine):
            return
        try:
            await within_async(self.engine.begin(), keeper.create_in)
        except Exception as error:
            # Another instance may have created it between check and CREATE.
            keeper.created_elsewhere(engine, error, await self.table_exists())
        else:
            mark_table_created(engine, keeper.table.name)

    async def table_exists(self) -> bool | None:
        """Whether the table exists; None when even that cannot be asked."""
        try:
            return await within_async(self.engine.connect(), self.keeper.table_exists)
        except Exception:  # the question failed too: the original error stands
            return None

    async def run[T](
        self, operation: Callable[[Connection], T], engine: AsyncEngine | None = None
    ) -> T:
        """Run ``operation`` in one transaction (on ``engine``; default: the runner's)."""
        return await within_async((self.engine if engine is None else engine).begin(), operation)

    async def guarded[T](
        self, operation: Callable[[Connection], T], engine: AsyncEngine | None = None
    ) -> T:
        """`run`, a failure raised as `TableKeeper.failure` says, the table checked when it may be missing."""
        try:
            return await self.run(operation, engine)
        except Exception as error:
            keeper = self.keeper
            exists = await self.table_exists() if keeper.checks_table(error) else None
            failure = keeper.failure(error, exists)
            if failure is error:
                raise
            raise failure from error
