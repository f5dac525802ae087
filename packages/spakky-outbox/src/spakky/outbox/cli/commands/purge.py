"""``spakky-outbox purge``: delete published messages older than a cutoff, in bounded batches."""

import argparse
from datetime import datetime
from typing import TextIO, override

from spakky.outbox.cli.command import (
    EXIT_OK,
    IOutboxCommand,
    Outbox,
    add_change_arguments,
    check_location,
    cutoff,
)


class PurgeCommand(IOutboxCommand):
    """Deletes published messages older than ``--published-before``."""

    name = "purge"
    summary = "delete published messages older than a cutoff"

    @override
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--published-before",
            type=cutoff,
            required=True,
            help="age (7d, 12h) or ISO timestamp",
        )
        add_change_arguments(parser, 10_000, "messages deleted")

    @override
    async def run(self, args: argparse.Namespace, outbox: Outbox, out: TextIO) -> int:
        check_location(args, outbox.target.defaulted)
        before: datetime = args.published_before
        if args.dry_run:
            published = (await outbox.storage.stats()).shown("published")
            print(
                f"dry run: would delete messages published before {before.isoformat()} "
                f"(at most the {published} published now), {args.batch} per batch; nothing changed",
                file=out,
            )
            return EXIT_OK
        total = 0
        while True:
            deleted = await outbox.storage.purge_published(before, args.batch)
            total += deleted
            print(
                f"purged {total} published before {before.isoformat()}",
                file=out,
                flush=True,
            )
            if deleted < args.batch:
                return EXIT_OK


COMMAND = PurgeCommand()
