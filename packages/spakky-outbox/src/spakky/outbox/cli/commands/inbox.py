"""``spakky-outbox inbox status|purge``: the idempotent consumers' records, and their sweep."""

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import TextIO, override

from spakky.outbox.cli.arguments import (
    add_change_arguments,
    add_json_argument,
    check_location,
    cutoff,
)
from spakky.outbox.cli.command import EXIT_OK, IOutboxCommand, Outbox
from spakky.outbox.cli.error import OutboxCommandError
from spakky.outbox.inbox.config import InboxConfig
from spakky.outbox.ports.inbox import IAsyncInboxStorage


class InboxCommand(IOutboxCommand, name="inbox", summary="the idempotent consumers' records: status, purge"):
    """Shows the inbox's records, or deletes those outside the dedup window in bounded batches."""

    @override
    async def run(self, args: argparse.Namespace, outbox: Outbox, out: TextIO) -> int:
        inbox = outbox.inbox
        if inbox is None:
            raise OutboxCommandError(
                "the selected storage has no inbox (the in-memory reference, spakky-outbox-sqlalchemy, spakky-outbox-mongodb and spakky-outbox-redis have one)"
            )
        if args.inbox_action == "status":
            return await _status(args, inbox, out)
        defaulted = inbox.defaulted()
        check_location(args, outbox.target.defaulted if defaulted is None else defaulted, "an inbox")
        before: datetime = args.before or datetime.now(UTC) - timedelta(seconds=InboxConfig().window_seconds)
        if args.dry_run:
            records = (await inbox.stats()).records
            print(
                f"dry run: would delete inbox records written before {before.isoformat()} "
                f"(at most the {records} kept now), {args.batch} per batch; nothing changed",
                file=out,
            )
            return EXIT_OK
        total = 0
        while True:
            deleted = await inbox.purge(before, args.batch)
            total += deleted
            print(f"purged {total} inbox records written before {before.isoformat()}", file=out, flush=True)
            if deleted < args.batch:
                return EXIT_OK

    @override
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="inbox_action", required=True)
        status = actions.add_parser("status", help="count the records, the unfinished leases, the oldest record's age")
        add_json_argument(status)
        purge = actions.add_parser("purge", help="delete records older than the window (or --before)")
        purge.add_argument(
            "--before",
            type=cutoff,
            default=None,
            help="age (7d, 12h) or ISO timestamp; default: SPAKKY_OUTBOX__INBOX__WINDOW_SECONDS ago",
        )
        add_change_arguments(purge, InboxConfig().sweep_batch, "records deleted")
        purge.set_defaults(json=False)


async def _status(args: argparse.Namespace, inbox: IAsyncInboxStorage, out: TextIO) -> int:
    stats = await inbox.stats()
    oldest = stats.oldest_recorded_at
    age = None if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())
    if args.json:
        shown = {"location": inbox.location(), "records": stats.records, "leased": stats.leased, "oldest_age_seconds": age}
        print(json.dumps(shown), file=out)
        return EXIT_OK
    print(f"inbox {inbox.location()}", file=out)
    print(f"records {stats.records}", file=out)
    print(f"leased {stats.leased} (handlers not finished: running, or crashed until their lease lapses)", file=out)
    print(f"oldest {'-' if age is None else f'{age:.0f}s'}", file=out)
    return EXIT_OK


COMMAND = InboxCommand()
