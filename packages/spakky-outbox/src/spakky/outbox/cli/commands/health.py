"""``spakky-outbox health``: exit 0 when healthy, 1 when not, for orchestrators."""

import argparse
from typing import TextIO, override

from spakky.outbox.cli import render
from spakky.outbox.cli.arguments import add_json_argument, positive_seconds
from spakky.outbox.cli.command import EXIT_OK, EXIT_UNHEALTHY, IOutboxCommand, Outbox


class HealthCommand(IOutboxCommand, name="health", summary="exit 0 when healthy, 1 when not (for orchestrators)"):
    """Runs the application's `OutboxHealthCheck` from the command line."""

    @override
    async def run(self, args: argparse.Namespace, outbox: Outbox, out: TextIO) -> int:
        result = await outbox.health.check(args.max_pending_age)
        print(
            render.to_json(
                render.health_json(outbox.target, result, args.max_pending_age)
            )
            if args.json
            else render.health_line(result),
            file=out,
        )
        return EXIT_OK if result.healthy else EXIT_UNHEALTHY

    @override
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--max-pending-age",
            type=positive_seconds,
            help="unhealthy when the oldest pending message is older (seconds)",
        )
        add_json_argument(parser)


COMMAND = HealthCommand()
