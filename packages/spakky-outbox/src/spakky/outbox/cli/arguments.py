"""The arguments ``spakky-outbox`` commands share: argparse types, ``--json``, the change options, the location guard."""

import argparse
import math
import re
from datetime import UTC, datetime, timedelta

from spakky.outbox.cli.error import OutboxCommandError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_cutoff(text: str, now: datetime | None = None) -> datetime:
    """Parse ``7d``/``12h``/``30m``/``45s`` (age) or an ISO-8601 timestamp.

    Raises:
        OutboxCommandError: The text is neither, or an age reaches before year 1.
    """
    now = now or datetime.now(UTC)
    if match := _DURATION.match(text):
        try:
            return now - timedelta(
                seconds=float(match.group(1)) * _UNITS[match.group(2)]
            )
        except OverflowError:
            raise OutboxCommandError(
                f"--published-before {text!r}: that age reaches before year 1; give a shorter age "
                "or an ISO timestamp"
            ) from None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise OutboxCommandError(
            f"--published-before {text!r}: give an age like 7d, 12h, 30m or an ISO timestamp"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cutoff(text: str) -> datetime:
    """``argparse`` type of an age or timestamp (see `parse_cutoff`)."""
    try:
        return parse_cutoff(text)
    except OutboxCommandError as error:
        # argparse names the argument itself.
        raise argparse.ArgumentTypeError((error.detail or str(error)).removeprefix("--published-before ")) from None


def positive_int(text: str) -> int:
    """``argparse`` type of a count: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """``argparse`` type of a duration: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """``--json``: print one JSON document instead of the target line and text."""
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def add_change_arguments(
    parser: argparse.ArgumentParser, batch: int, what: str
) -> None:
    """The arguments of a command that changes the outbox: ``--batch``, ``--dry-run``, ``--allow-default-location``."""
    parser.add_argument(
        "--batch",
        type=positive_int,
        default=batch,
        help=f"{what} per round trip (default {batch})",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be done; change nothing",
    )
    parser.add_argument(
        "--allow-default-location",
        action="store_true",
        help="act even though the storage's location settings were left at their defaults",
    )


def check_location(args: argparse.Namespace, defaulted: tuple[str, ...], what: str = "an outbox") -> None:
    """Refuse to change ``what`` when nobody chose its location (``defaulted`` settings), unless told to.

    Raises:
        OutboxCommandError: The location was left at its defaults and neither
            ``--allow-default-location`` nor ``--dry-run`` was given.
    """
    if defaulted and not (args.allow_default_location or args.dry_run):
        raise OutboxCommandError(
            f"{args.command} refuses to change {what} whose location was left at its "
            f"defaults: set {', '.join(defaulted)}, or pass --allow-default-location"
        )
