# Sync twin generated from packages/spakky-outbox-sqlalchemy/src/spakky/plugins/outbox_sqlalchemy/async_tables.py by tools/unasync.py; do not edit it.
# Change the async source and run `make unasync`: `make lint` fails while this file differs.
# Source sha256 (with the tool's): acaa2e8412e16f4927eaf4f7b95d03c88e67d746501ccbefbb27d00fee5f68ea
"""Operations of one table on a sync engine, each in a short transaction of its own.

Its twin ``sync_tables`` is generated (``make unasync``); what the drivers
really do differently is a hand-written pair of functions in `tables`.
"""

from collections.abc import Callable
from dataclasses import dataclass

from spakky.plugins.outbox_sqlalchemy.tables import (
    TableKeeper,
    engine_of,
    mark_table_created,
    within,
)
from sqlalchemy import Connection, Engine


@dataclass(frozen=True)
class TableRunner:
    """Runs operations of a `TableKeeper`'s table on a sync engine; creates the table on first use."""

    engine: Engine
    keeper: TableKeeper

    def ensure_table(self) -> None:
        """Create the table unless this process knows it exists (see `TableKeeper.must_create`)."""
        keeper, engine = self.keeper, engine_of(self.engine)
        if not keeper.must_create(engine):
            return
        try:
            within(self.engine.begin(), keeper.create_in)
        except Exception as error:
            # Another instance may have created it between check and CREATE.
            keeper.created_elsewhere(engine, error, self.table_exists())
        else:
            mark_table_created(engine, keeper.table.name)

    def table_exists(self) -> bool | None:
        """Whether the table exists; None when even that cannot be asked."""
        try:
            return within(self.engine.connect(), self.keeper.table_exists)
        except Exception:  # the question failed too: the original error stands
            return None

    def run[T](
        self, operation: Callable[[Connection], T], engine: Engine | None = None
    ) -> T:
        """Run ``operation`` in one transaction (on ``engine``; default: the runner's)."""
        return within((self.engine if engine is None else engine).begin(), operation)

    def guarded[T](
        self, operation: Callable[[Connection], T], engine: Engine | None = None
    ) -> T:
        """`run`, a failure raised as `TableKeeper.failure` says, the table checked when it may be missing."""
        try:
            return self.run(operation, engine)
        except Exception as error:
            keeper = self.keeper
            exists = self.table_exists() if keeper.checks_table(error) else None
            failure = keeper.failure(error, exists)
            if failure is error:
                raise
            raise failure from error
