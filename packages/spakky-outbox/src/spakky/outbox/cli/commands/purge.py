"""``spakky-outbox purge``: delete published messages older than a cutoff, in bounded batches."""

import argparse
from datetime import datetime
from typing import TextIO, override

from spakky.outbox.cli.arguments import add_change_arguments, check_location, cutoff
from spakky.outbox.cli.command import EXIT_OK, IOutboxCommand, Outbox


class PurgeCommand(IOutboxCommand, name="purge", summary="delete published messages older than a cutoff"):
    """Deletes published messages older than ``--published-before``."""

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

    @override
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--published-before",
            type=cutoff,
            required=True,
            help="age (7d, 12h) or ISO timestamp",
        )
        add_change_arguments(parser, 10_000, "messages deleted")


COMMAND = PurgeCommand()
