"""``spakky-outbox``: see and fix what is stuck, on every storage, from the app's settings.

The command builds the application the way the service does (``load_plugins``
from the same ``SPAKKY_*`` environment), with the relay switched off, and
works through the storage's administration capability.
"""

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import Any, cast
from uuid import UUID

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.error import AbstractSpakkyOutboxError
from spakky.outbox.ports.storage import IAsyncOutboxAdministration, IAsyncOutboxStorage
from spakky.outbox.scaffold.generate import main as new_backend

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class OutboxCommandError(AbstractSpakkyOutboxError):
    """Raised for a command-line usage the outbox cannot carry out."""

    message = "spakky-outbox"


def parse_cutoff(text: str, now: datetime | None = None) -> datetime:
    """Parse ``7d``/``12h``/``30m``/``45s`` (age) or an ISO-8601 timestamp.

    Raises:
        OutboxCommandError: The text is neither.
    """
    now = now or datetime.now(UTC)
    if match := _DURATION.match(text):
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise OutboxCommandError(
            f"--published-before {text!r}: give an age like 7d, 12h, 30m or an ISO timestamp"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spakky-outbox", description=__doc__)
    parser.add_argument("--include", help="comma-separated plugin names to load (default: all installed)")
    parser.add_argument("--scan", help="module to scan for the app's own Pods (e.g. a custom storage)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="counts by state and the oldest pending age")
    abandoned = commands.add_parser("abandoned", help="list abandoned messages with their last error")
    abandoned.add_argument("--limit", type=int, default=50)
    requeue = commands.add_parser("requeue", help="make abandoned messages pending again")
    requeue.add_argument("ids", nargs="*", type=UUID, help="message ids (default with --all: every one)")
    requeue.add_argument("--all", action="store_true", help="requeue every abandoned message")
    purge = commands.add_parser("purge", help="delete published messages older than a cutoff")
    purge.add_argument("--published-before", required=True, help="age (7d, 12h) or ISO timestamp")
    purge.add_argument("--batch", type=int, default=10_000, help="rows deleted per round trip")
    commands.add_parser("new-backend", help="create a storage package skeleton (new-backend --help)")
    return parser


def _build(include: str | None, scan: str | None) -> SpakkyApplication:
    os.environ["SPAKKY_OUTBOX__RELAY"] = "off"
    app = SpakkyApplication(ApplicationContext())
    plugins = None if include is None else {Plugin(name=n.strip()) for n in include.split(",") if n.strip()}
    app.load_plugins(include=plugins)
    if scan:
        app.scan(import_module(scan))
    return app.start()


def _run[T](app: SpakkyApplication, coroutine: Coroutine[Any, Any, T]) -> T:
    loop = cast(
        asyncio.AbstractEventLoop,
        app.application_context._ApplicationContext__event_loop,  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue]
    )
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


async def _execute(args: argparse.Namespace, storage: IAsyncOutboxAdministration, out: Any) -> None:
    if args.command == "status":
        s = await storage.stats()
        age = "-" if s.oldest_pending_age_seconds is None else f"{s.oldest_pending_age_seconds:.1f}s"
        print(
            f"pending={s.pending} claimed={s.claimed} published={s.published} "
            f"abandoned={s.abandoned} oldest_pending_age={age}",
            file=out,
        )
    elif args.command == "abandoned":
        for m in await storage.list_abandoned(args.limit):
            print(f"{m.id} {m.event_name} key={m.partition_key} retries={m.retry_count} "
                  f"abandoned_at={m.abandoned_at} error={m.last_error}", file=out)
    elif args.command == "requeue":
        if not args.ids and not args.all:
            raise OutboxCommandError("requeue: give message ids or --all")
        count = await storage.requeue_abandoned(None if args.all else args.ids)
        print(f"requeued {count}", file=out)
    else:
        cutoff = parse_cutoff(args.published_before)
        total = 0
        while True:
            deleted = await storage.purge_published(cutoff, args.batch)
            total += deleted
            print(f"purged {total} published before {cutoff.isoformat()}", file=out, flush=True)
            if deleted < args.batch:
                break


def main(argv: Sequence[str] | None = None, out: Any = None) -> int:
    """Run the command; returns the process exit status."""
    out = out or sys.stdout
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["new-backend"]:  # builds no application
        return new_backend(argv[1:], out)
    args = _parser().parse_args(argv)
    try:
        app = _build(args.include, args.scan)
    except AbstractSpakkyOutboxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        storage = app.application_context.get(IAsyncOutboxStorage)  # type: ignore[type-abstract]
        if not isinstance(storage, IAsyncOutboxAdministration):
            raise OutboxCommandError(
                f"{type(storage).__name__} does not implement IAsyncOutboxAdministration"
            )
        _run(app, _execute(args, storage, out))
        return 0
    except AbstractSpakkyOutboxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        app.stop()


if __name__ == "__main__":
    sys.exit(main())
