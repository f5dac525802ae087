"""``spakky-outbox``: see and fix what is stuck, on every storage, from the app's settings.

The command builds the application the way the service does (``load_plugins``
from the same ``SPAKKY_*`` environment), with the relay switched off and only
the outbox, its storage package and the plugins they need loaded, and works
through the storage's administration capability. Exit status: 0 done (or
healthy), 1 unhealthy (``health``), 2 error (one line on stderr).
"""

import argparse
import math
import os
import re
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import Any, NoReturn, TextIO, cast, override
from uuid import UUID

from pydantic import ValidationError
from pydantic_settings import BaseSettings
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.core.common.error import AbstractSpakkyFrameworkError
from spakky.outbox.cli import render
from spakky.outbox.cli.plugins import outbox_plugins
from spakky.outbox.common.config import describe_settings_error, redact_credentials
from spakky.outbox.common.loop import StorageLoop
from spakky.outbox.common.stats import OutboxTarget
from spakky.outbox.error import AbstractOutboxDetailedError, AbstractSpakkyOutboxError
from spakky.outbox.ports.storage import IAsyncOutboxAdministration, IAsyncOutboxStorage
from spakky.outbox.relay.health import OutboxHealthCheck
from spakky.outbox.scaffold.generate import main as new_backend

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_ERROR = 2

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class OutboxCommandError(AbstractOutboxDetailedError):
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, exit status 2."""

    @override
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {render.printable(message)} (see --help)\n")


def _destructive(command: argparse.ArgumentParser, batch: int, what: str) -> None:
    command.add_argument("--batch", type=_positive_int, default=batch, help=f"{what} per round trip (default {batch})")
    command.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    command.add_argument(
        "--allow-default-location",
        action="store_true",
        help="act even though the storage's location settings were left at their defaults",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spakky-outbox", description=__doc__)
    parser.add_argument(
        "--include",
        help="comma-separated plugin names to load (default: spakky-outbox, the selected storage package and what they need)",
    )
    parser.add_argument("--scan", help="module to scan for the app's own Pods (e.g. a custom storage)")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="counts by state and the oldest pending age")
    status.add_argument("--json", action="store_true", help="print one JSON document")
    abandoned = commands.add_parser("abandoned", help="list abandoned messages with their last error")
    abandoned.add_argument("--limit", type=_positive_int, default=50, help="most messages listed (default 50)")
    abandoned.add_argument("--json", action="store_true", help="print one JSON document")
    requeue = commands.add_parser("requeue", help="make abandoned messages pending again")
    requeue.add_argument("ids", nargs="*", type=UUID, help="message ids (or --all)")
    requeue.add_argument("--all", action="store_true", help="requeue the messages abandoned when the command starts")
    _destructive(requeue, 1_000, "messages requeued")
    purge = commands.add_parser("purge", help="delete published messages older than a cutoff")
    purge.add_argument("--published-before", required=True, help="age (7d, 12h) or ISO timestamp")
    _destructive(purge, 10_000, "messages deleted")
    health = commands.add_parser("health", help="exit 0 when healthy, 1 when not (for orchestrators)")
    health.add_argument(
        "--max-pending-age", type=_positive_seconds, help="unhealthy when the oldest pending message is older (seconds)"
    )
    health.add_argument("--json", action="store_true", help="print one JSON document")
    commands.add_parser("new-backend", help="create a storage package skeleton (new-backend --help)")
    return parser


def _build(include: str | None, scan: str | None) -> SpakkyApplication:
    os.environ["SPAKKY_OUTBOX__RELAY"] = "off"
    app = SpakkyApplication(ApplicationContext())
    if include is None:
        plugins = outbox_plugins()
    else:
        plugins = {Plugin(name=n.strip()) for n in include.split(",") if n.strip()}
    app.load_plugins(include=plugins)
    if scan:
        app.scan(import_module(scan))
    return app.start()


def _run[T](app: SpakkyApplication, coroutine: Coroutine[Any, Any, T]) -> T:
    return StorageLoop.of(app.application_context).run_blocking(coroutine)


def _check_location(args: argparse.Namespace, target: OutboxTarget) -> None:
    """Refuse to change an outbox whose location nobody chose, unless told to."""
    if target.defaulted and not (args.allow_default_location or args.dry_run):
        raise OutboxCommandError(
            f"{args.command} refuses to change an outbox whose location was left at its "
            f"defaults: set {', '.join(target.defaulted)}, or pass --allow-default-location"
        )


async def _requeue(
    args: argparse.Namespace, storage: IAsyncOutboxAdministration, out: TextIO
) -> None:
    if bool(args.ids) == args.all:
        raise OutboxCommandError("requeue: give message ids or --all (not both)")
    if args.dry_run:
        abandoned = (await storage.stats()).shown("abandoned")
        what = f"{abandoned} abandoned" if args.all else f"those of the {len(args.ids)} given that are abandoned ({abandoned} abandoned in all)"
        print(f"dry run: would requeue {what}, {args.batch} per batch; nothing changed", file=out)
        return
    if args.all:
        # Bounded by the count at the start: messages the relay abandons again
        # meanwhile wait for the next run instead of keeping this one going.
        stats = await storage.stats()
        ceiling, shown = stats.abandoned, stats.shown("abandoned")
        total = 0
        while total < ceiling:
            wanted = min(args.batch, ceiling - total)
            requeued = await storage.requeue_abandoned(None, wanted)
            total += requeued
            print(f"requeued {total} of {shown}", file=out, flush=True)
            if requeued < wanted:
                break
        if ceiling == 0:
            print("requeued 0 of 0", file=out)
        elif stats.at_least("abandoned") and total == ceiling:
            print(f"more than {ceiling} may be abandoned (counts stop there): run it again for the rest", file=out)
        return
    ids = list(dict.fromkeys(cast(list[UUID], args.ids)))
    total = 0
    for start in range(0, len(ids), args.batch):
        chunk = ids[start : start + args.batch]
        total += await storage.requeue_abandoned(chunk, len(chunk))
        print(f"requeued {total} of {len(ids)} given", file=out, flush=True)
    if total < len(ids):
        print(f"{len(ids) - total} of the given ids were not abandoned (unknown, pending or published)", file=out)


async def _purge(
    args: argparse.Namespace, storage: IAsyncOutboxAdministration, out: TextIO
) -> None:
    cutoff = parse_cutoff(args.published_before)
    if args.dry_run:
        published = (await storage.stats()).shown("published")
        print(
            f"dry run: would delete messages published before {cutoff.isoformat()} "
            f"(at most the {published} published now), {args.batch} per batch; nothing changed",
            file=out,
        )
        return
    total = 0
    while True:
        deleted = await storage.purge_published(cutoff, args.batch)
        total += deleted
        print(f"purged {total} published before {cutoff.isoformat()}", file=out, flush=True)
        if deleted < args.batch:
            break


async def _execute(
    args: argparse.Namespace,
    storage: IAsyncOutboxAdministration,
    health: OutboxHealthCheck,
    out: TextIO,
) -> int:
    target = storage.target()
    as_json: bool = getattr(args, "json", False)
    if not as_json:
        print(render.target_line(target), file=out)
    if args.command == "status":
        stats = await storage.stats()
        print(render.to_json(render.stats_json(target, stats)) if as_json else render.stats_line(stats), file=out)
    elif args.command == "abandoned":
        messages = await storage.list_abandoned(args.limit)
        if as_json:
            print(render.to_json(render.abandoned_json(target, messages)), file=out)
        elif not messages:
            print("no abandoned messages", file=out)
        else:
            for message in messages:
                print(render.abandoned_line(message), file=out)
    elif args.command == "health":
        result = await health.check(args.max_pending_age)
        print(
            render.to_json(render.health_json(target, result, args.max_pending_age))
            if as_json
            else render.health_line(result),
            file=out,
        )
        return EXIT_OK if result.healthy else EXIT_UNHEALTHY
    else:
        _check_location(args, target)
        await (_requeue if args.command == "requeue" else _purge)(args, storage, out)
    return EXIT_OK


def _settings_error(error: ValidationError) -> str:
    """Name the variables a settings class refused, without their secret values."""
    prefixes = {
        cls.model_config.get("env_prefix", "")
        for cls in _subclasses(BaseSettings)
        if cls.__name__ == error.title
    }
    prefix = prefixes.pop() if len(prefixes) == 1 else ""
    return f"invalid settings ({error.title}): {describe_settings_error(prefix, error)}"


def _subclasses(cls: type[BaseSettings]) -> list[type[BaseSettings]]:
    found: list[type[BaseSettings]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _fail(error: BaseException) -> int:
    """Print ``error`` as one line on stderr (no secret, no control character)."""
    if isinstance(error, ValidationError):
        text = _settings_error(error)
    elif isinstance(error, OutboxCommandError):
        text = error.detail or str(error)
    elif isinstance(error, AbstractSpakkyOutboxError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    print(f"spakky-outbox: error: {render.printable(redact_credentials(text))}", file=sys.stderr)
    return EXIT_ERROR


_EXPECTED = (AbstractSpakkyFrameworkError, ValidationError, ImportError)
"""Errors of settings, installation or storage: one line, exit 2. Anything else is a bug."""


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command; returns the process exit status."""
    stream: TextIO = out or sys.stdout
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["new-backend"]:  # builds no application
        return new_backend(argv[1:], stream)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else EXIT_ERROR
    try:
        app = _build(args.include, args.scan)
    except _EXPECTED as error:
        return _fail(error)
    try:
        context = app.application_context
        storage = context.get(IAsyncOutboxStorage)  # type: ignore[type-abstract]
        if not isinstance(storage, IAsyncOutboxAdministration):
            raise OutboxCommandError(
                f"{type(storage).__name__} does not implement IAsyncOutboxAdministration"
            )
        return _run(app, _execute(args, storage, context.get(OutboxHealthCheck), stream))
    except _EXPECTED as error:
        return _fail(error)
    finally:
        app.stop()


if __name__ == "__main__":
    sys.exit(main())
