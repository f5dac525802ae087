"""``spakky-outbox``: see and fix what is stuck, on every storage, from the app's settings.

The command builds the application the way the service does (``load_plugins``
from the same ``SPAKKY_*`` environment), with the relay switched off and only
the outbox, its storage package and the plugins they need loaded, and works
through the storage's administration capability (an async storage's, or a
sync-only storage's run in worker threads). Exit status: 0 done (or healthy),
1 unhealthy (``health``), 2 error (one line on stderr).

Each subcommand is a module of `spakky.outbox.cli.commands`, registered there
in one list.
"""

import argparse
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from importlib import import_module
from typing import NoReturn, TextIO, override

from pydantic import ValidationError
from pydantic_settings import BaseSettings
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.core.common.error import AbstractSpakkyFrameworkError
from spakky.outbox.application.administration import outbox_administration
from spakky.outbox.application.loop import StorageLoop
from spakky.outbox.cli import render
from spakky.outbox.cli.command import (
    EXIT_ERROR,
    ICommand,
    IOutboxCommand,
    IStandaloneCommand,
    Outbox,
)
from spakky.outbox.cli.commands import registered_commands
from spakky.outbox.cli.error import OutboxCommandError
from spakky.outbox.cli.plugins import outbox_plugins
from spakky.outbox.common.config import describe_settings_error, redact_credentials
from spakky.outbox.error import AbstractSpakkyOutboxError
from spakky.outbox.ports.inbox import IAsyncInboxStorage
from spakky.outbox.relay.health import OutboxHealthCheck


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, exit status 2."""

    @override
    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_ERROR,
            f"{self.prog}: error: {render.printable(message)} (see --help)\n",
        )


_REST_LITERAL = re.compile(r"``(.+?)``|`([^`]+)`")
"""reST inline literals and references (``x``, `x`) in the docstrings shown as help."""


def plain_help(docstring: str) -> str:
    """``docstring`` as ``--help`` shows it: reST backticks dropped, the words kept."""
    return _REST_LITERAL.sub(lambda match: match.group(1) or match.group(2), docstring)


def _parser(commands: Sequence[ICommand]) -> argparse.ArgumentParser:
    parser = _Parser(prog="spakky-outbox", description=plain_help(__doc__ or ""))
    parser.add_argument(
        "--include",
        help="comma-separated plugin names to load (default: spakky-outbox, the selected storage package and what they need)",
    )
    parser.add_argument(
        "--scan", help="module to scan for the app's own Pods (e.g. a custom storage)"
    )
    parser.set_defaults(json=False)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in commands:
        if isinstance(command, IStandaloneCommand):
            # Its own parser reads whatever follows its name.
            standalone = subparsers.add_parser(command.name, help=command.summary, add_help=False)
            standalone.add_argument("arguments", nargs=argparse.REMAINDER)
        else:
            command.add_arguments(subparsers.add_parser(command.name, help=command.summary))
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


def _execute(
    command: IOutboxCommand,
    args: argparse.Namespace,
    app: SpakkyApplication,
    out: TextIO,
) -> int:
    context = app.application_context
    storage = outbox_administration(context)
    outbox = Outbox(
        storage,
        context.get(OutboxHealthCheck),
        storage.target(),
        context.get_or_none(IAsyncInboxStorage),
    )
    if not args.json:
        print(render.target_line(outbox.target), file=out)
    return StorageLoop.of(context).run_blocking(command.run(args, outbox, out))


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


def _url_settings() -> list[str]:
    """The ``SPAKKY_*`` variables holding a URL (a connection string), by name."""
    return sorted(
        name
        for name, value in os.environ.items()
        if name.startswith("SPAKKY_") and ("://" in value or name.endswith(("URL", "CONNECTION_STRING")))
    )


def _fail(error: BaseException) -> int:
    """Print ``error`` as one line on stderr (no secret, no control character)."""
    if isinstance(error, ValidationError):
        text = _settings_error(error)
    elif isinstance(error, OutboxCommandError):
        text = error.detail or str(error)
    elif isinstance(error, AbstractSpakkyOutboxError):
        text = str(error)
    elif isinstance(error, ValueError) and (urls := _url_settings()):
        # A driver refusing a malformed URL quotes the piece it choked on,
        # which can be part of the password: name the settings, not the text.
        text = (
            f"a connection setting could not be used ({', '.join(urls)}): {type(error).__name__}; "
            "check its scheme, host and port, and percent-encode ':', '/', '@' and '?' in the password"
        )
    else:
        text = f"{type(error).__name__}: {error}"
    print(f"spakky-outbox: error: {render.printable(redact_credentials(text))}", file=sys.stderr)
    return EXIT_ERROR


_EXPECTED = (AbstractSpakkyFrameworkError, ValidationError, ImportError, ValueError, OSError)
"""Errors of settings, installation or storage (a driver's ``ValueError`` on a malformed URL,
an ``OSError`` reaching the server): one line, exit 2. Anything else is a bug."""


_DRIVER_THREAD_GRACE_SECONDS = 1.0
"""How long a failed command waits for a driver's worker threads to finish with the loop still open."""


def _let_driver_threads_finish() -> None:
    """Wait, bounded, for aiosqlite's worker threads before the application closes its loop.

    A failed ``aiosqlite.connect`` stops its worker thread with a future on the
    application's loop; closing the loop before the thread resolves it makes
    the thread print "Exception in thread ... Event loop is closed" after our
    one-line error (omnilib/aiosqlite#241).
    """
    deadline = time.monotonic() + _DRIVER_THREAD_GRACE_SECONDS
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            thread.join(max(0.0, deadline - time.monotonic()))


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command; returns the process exit status."""
    stream: TextIO = out or sys.stdout
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {command.name: command for command in registered_commands()}
    standalone = commands.get(argv[0]) if argv else None
    if isinstance(
        standalone, IStandaloneCommand
    ):  # builds no application, parses its own arguments
        return standalone.main(argv[1:], stream)
    try:
        args = _parser(list(commands.values())).parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else EXIT_ERROR
    command = commands[args.command]
    if isinstance(command, IStandaloneCommand):  # named after the top-level options
        return command.main(args.arguments, stream)
    if not isinstance(
        command, IOutboxCommand
    ):  # pragma: no cover - a command is one of the two
        raise TypeError(f"{command.name} is neither an outbox nor a standalone command")
    try:
        app = _build(args.include, args.scan)
    except _EXPECTED as error:
        return _fail(error)
    try:
        return _execute(command, args, app, stream)
    except _EXPECTED as error:
        _let_driver_threads_finish()
        return _fail(error)
    finally:
        app.stop()


if __name__ == "__main__":
    sys.exit(main())
