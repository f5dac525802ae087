"""``spakky-outbox status``: counts by state and the age of the oldest pending message."""

import argparse
from typing import TextIO, override

from spakky.outbox.cli import render
from spakky.outbox.cli.arguments import add_json_argument
from spakky.outbox.cli.command import EXIT_OK, IOutboxCommand, Outbox
from spakky.outbox.common.stats import OutboxStats


def stats_line(stats: OutboxStats) -> str:
    """``pending=… claimed=… published=… abandoned=… oldest_pending_age=…``."""
    age = (
        "-"
        if stats.oldest_pending_age_seconds is None
        else f"{stats.oldest_pending_age_seconds:.1f}s"
    )
    return (
        f"pending={stats.pending} claimed={stats.claimed} published={stats.published} "
        f"abandoned={stats.abandoned} oldest_pending_age={age}"
    )


class StatusCommand(IOutboxCommand, name="status", summary="counts by state and the oldest pending age"):
    """Prints the outbox's counts by state."""

    @override
    async def run(self, args: argparse.Namespace, outbox: Outbox, out: TextIO) -> int:
        stats = await outbox.storage.stats()
        print(
            render.to_json(render.stats_json(outbox.target, stats))
            if args.json
            else stats_line(stats),
            file=out,
        )
        return EXIT_OK

    @override
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_json_argument(parser)


COMMAND = StatusCommand()
