"""``spakky-outbox abandoned``: the abandoned messages with their attempts and last error."""

import argparse
from typing import TextIO, override

from spakky.outbox.cli import render
from spakky.outbox.cli.arguments import add_json_argument, positive_int
from spakky.outbox.cli.command import EXIT_OK, IOutboxCommand, Outbox
from spakky.outbox.common.message import OutboxMessage

MAX_LISTED = 10_000
"""Most messages one ``abandoned`` lists (a terminal's worth many times over; repair goes by ``requeue``)."""


def listing_limit(text: str) -> int:
    """``argparse`` type of ``--limit``: a whole number from 1 to `MAX_LISTED`."""
    value = positive_int(text)
    if value > MAX_LISTED:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_LISTED}, got {value}")
    return value


def abandoned_line(message: OutboxMessage) -> str:
    """One abandoned message on one line, every stored field escaped."""
    key = (
        "-"
        if message.partition_key is None
        else render.printable(message.partition_key)
    )
    error = "-" if message.last_error is None else render.printable(message.last_error)
    abandoned_at = (
        "-" if message.abandoned_at is None else message.abandoned_at.isoformat()
    )
    return (
        f"{message.id} {render.printable(message.event_name)} key={key} "
        f"attempts={render.delivery_attempts(message)} abandoned_at={abandoned_at} "
        f"error={error}"
    )


class AbandonedCommand(IOutboxCommand, name="abandoned", summary="list abandoned messages with their last error"):
    """Lists abandoned messages, oldest first; payloads and headers are never printed."""

    @override
    async def run(self, args: argparse.Namespace, outbox: Outbox, out: TextIO) -> int:
        messages = await outbox.storage.list_abandoned(args.limit)
        if args.json:
            print(
                render.to_json(render.abandoned_json(outbox.target, messages)), file=out
            )
        elif not messages:
            print("no abandoned messages", file=out)
        else:
            for message in messages:
                print(abandoned_line(message), file=out)
        return EXIT_OK

    @override
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--limit",
            type=listing_limit,
            default=50,
            help=f"most messages listed, 1 to {MAX_LISTED} (default 50)",
        )
        add_json_argument(parser)


COMMAND = AbandonedCommand()
