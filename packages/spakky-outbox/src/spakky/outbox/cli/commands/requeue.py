"""``spakky-outbox requeue``: make abandoned messages pending again, in bounded batches."""

import argparse
from typing import TextIO, cast, override
from uuid import UUID

from spakky.outbox.cli.arguments import add_change_arguments, check_location
from spakky.outbox.cli.command import EXIT_OK, IOutboxCommand, Outbox
from spakky.outbox.cli.error import OutboxCommandError
from spakky.outbox.ports.storage import IAsyncOutboxAdministration


class RequeueCommand(IOutboxCommand, name="requeue", summary="make abandoned messages pending again"):
    """Requeues the given abandoned messages, or all those abandoned when it starts."""

    @override
    async def run(self, args: argparse.Namespace, outbox: Outbox, out: TextIO) -> int:
        check_location(args, outbox.target.defaulted)
        if bool(args.ids) == args.all:
            raise OutboxCommandError("requeue: give message ids or --all (not both)")
        storage = outbox.storage
        if args.dry_run:
            abandoned = (await storage.stats()).shown("abandoned")
            what = (
                f"{abandoned} abandoned"
                if args.all
                else f"those of the {len(args.ids)} given that are abandoned ({abandoned} abandoned in all)"
            )
            print(
                f"dry run: would requeue {what}, {args.batch} per batch; nothing changed",
                file=out,
            )
        elif args.all:
            await self._requeue_all(storage, args.batch, out)
        else:
            await self._requeue_ids(
                storage,
                list(dict.fromkeys(cast(list[UUID], args.ids))),
                args.batch,
                out,
            )
        return EXIT_OK


    @override
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("ids", nargs="*", type=UUID, help="message ids (or --all)")
        parser.add_argument(
            "--all",
            action="store_true",
            help="requeue the messages abandoned when the command starts",
        )
        add_change_arguments(parser, 1_000, "messages requeued")
    @staticmethod
    async def _requeue_all(
        storage: IAsyncOutboxAdministration, batch: int, out: TextIO
    ) -> None:
        # Bounded by the count at the start: messages the relay abandons again
        # meanwhile wait for the next run instead of keeping this one going.
        stats = await storage.stats()
        ceiling, shown = stats.abandoned, stats.shown("abandoned")
        total = 0
        while total < ceiling:
            wanted = min(batch, ceiling - total)
            requeued = await storage.requeue_abandoned(None, wanted)
            total += requeued
            print(f"requeued {total} of {shown}", file=out, flush=True)
            if requeued < wanted:
                break
        if ceiling == 0:
            print("requeued 0 of 0", file=out)
        elif stats.at_least("abandoned") and total == ceiling:
            print(
                f"more than {ceiling} may be abandoned (counts stop there): run it again for the rest",
                file=out,
            )

    @staticmethod
    async def _requeue_ids(
        storage: IAsyncOutboxAdministration, ids: list[UUID], batch: int, out: TextIO
    ) -> None:
        total = 0
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            total += await storage.requeue_abandoned(chunk, len(chunk))
            print(f"requeued {total} of {len(ids)} given", file=out, flush=True)
        if total < len(ids):
            print(
                f"{len(ids) - total} of the given ids were not abandoned (unknown, pending or published)",
                file=out,
            )


COMMAND = RequeueCommand()
