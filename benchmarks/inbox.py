"""What the inbox costs a handler: the handler with the inbox beside the same handler writing one plain row more.

Runs in the workspace venv (``python -m benchmarks.inbox``, normally started by
`benchmarks.run` as the ``inbox_handle`` section). One handler call is one
SQLAlchemy transaction on PostgreSQL (the plugin's ``AsyncTransaction``, as
``@Transactional()`` opens it) writing one business row. Three modes rotate
round by round (see `benchmarks.common.rotate_modes`):

- ``plain``: the business row only;
- ``inbox``: the inbox records (consumer, message id) first, as the
  ``@Idempotent`` aspect does, then the business row (every message is new);
- ``extra_row``: the business row and one more plain row instead.

The figure is the median of the rounds' ``inbox / extra_row`` ratios at 1 and
16 concurrent handlers (issue 19: at least 0.9x). Prints one JSON result line.
"""

import asyncio
from typing import Any
from uuid import uuid4

from spakky.plugins.outbox_sqlalchemy.inbox import AsyncSqlAlchemyInboxStorage
from spakky.plugins.sqlalchemy.persistency.transaction import AsyncTransaction
from sqlalchemy import insert, text

from benchmarks.common import (
    DEFAULT_PG_URL,
    EXTRA_ROW,
    PLAIN,
    emit,
    parse_args,
    progress,
    rotate_modes,
)
from benchmarks.ours import OursBench, orders

SCHEMA = "spakky_bench_inbox"
"""A schema of its own: other sections may run at the same time on the machine."""
INBOX = "inbox"
CONSUMER = "bench.OrderPlacedHandler.on_order_placed"


async def inbox_handle(sizes: dict[str, Any]) -> dict[str, Any]:
    """Handler commits/s per mode and the inbox / one-extra-row ratio per concurrency."""
    bench = OursBench(DEFAULT_PG_URL, SCHEMA)
    await bench.setup()
    inbox = AsyncSqlAlchemyInboxStorage(bench.sessions, bench.connections, bench.storage_config)
    result: dict[str, Any] = {}

    async def handle(order_id: str, mode: str) -> None:
        async with AsyncTransaction(bench.connection_config, bench.sessions) as tx:
            if mode == INBOX and not await inbox.record(CONSUMER, str(uuid4())):
                raise AssertionError("a new message id was taken for a duplicate")
            await tx.session.execute(insert(orders).values(order_id=order_id, customer_id="c1"))
            if mode == EXTRA_ROW:
                await tx.session.execute(insert(orders).values(order_id=order_id, customer_id="c2"))

    try:
        for concurrency in sizes.get("inbox_concurrency", [1, 16]):
            async with bench.engine.begin() as connection:
                await connection.execute(text("TRUNCATE bench_orders"))
            progress(f"inbox handler x{concurrency}: plain, inbox, one extra row")
            measured = await rotate_modes(
                handle,
                bench.context.clear_context,
                (PLAIN, INBOX, EXTRA_ROW),
                concurrency=concurrency,
                seconds=sizes.get("inbox_seconds", 8.0),
                rounds=sizes.get("inbox_rounds", 8),
                warmup=sizes.get("inbox_warmup", 0.5),
            )
            entry: dict[str, Any] = {
                "plain_per_s": measured.rate[PLAIN],
                "inbox_per_s": measured.rate[INBOX],
                "extra_row_per_s": measured.rate[EXTRA_ROW],
                "ratio": measured.median_ratio(INBOX, EXTRA_ROW),
                "errors": measured.errors,
            }
            if measured.first_error:
                entry["first_error"] = measured.first_error
            progress(
                f"inbox handler x{concurrency}: {entry['plain_per_s']:.0f}/s plain, "
                f"{entry['inbox_per_s']:.0f}/s with the inbox, {entry['extra_row_per_s']:.0f}/s with one "
                f"extra row; inbox / extra row {entry['ratio']:.2f} (median of rounds); errors {measured.errors}"
            )
            result[f"c{concurrency}"] = entry
    finally:
        await bench.teardown()
    return result


async def main() -> None:
    """Run the section and print its JSON."""
    _, sizes = parse_args(__doc__ or "")
    emit({"inbox_handle": await inbox_handle(sizes)})


if __name__ == "__main__":
    asyncio.run(main())
