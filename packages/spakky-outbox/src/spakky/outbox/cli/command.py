"""What a ``spakky-outbox`` command is: its arguments, its run, the outbox it runs on, its exit statuses."""

import argparse
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TextIO

# Re-exported where they were defined before `arguments` and `error` held them.
from spakky.outbox.cli.arguments import parse_cutoff as parse_cutoff
from spakky.outbox.cli.error import OutboxCommandError as OutboxCommandError
from spakky.outbox.common.stats import OutboxTarget
from spakky.outbox.ports.inbox import IAsyncInboxStorage
from spakky.outbox.ports.storage import IAsyncOutboxAdministration
from spakky.outbox.relay.health import OutboxHealthCheck

EXIT_OK = 0
"""Done (``health``: healthy)."""
EXIT_UNHEALTHY = 1
"""``health`` only: unhealthy."""
EXIT_ERROR = 2
"""Bad arguments or settings, or the command could not be carried out (as argparse's usage status)."""

@dataclass(frozen=True)
class Outbox:
    """The outbox a command works on: the storage's administration capability and the health check."""

    storage: IAsyncOutboxAdministration
    health: OutboxHealthCheck
    target: OutboxTarget
    """Where it lives (printed before anything else)."""
    inbox: IAsyncInboxStorage | None = None
    """The storage package's inbox, when it has one (``spakky-outbox inbox``)."""


class ICommand(ABC):
    """One ``spakky-outbox`` subcommand: its name, its one-line help and its arguments.

    A command names itself in its class statement:
    ``class StatusCommand(IOutboxCommand, name="status", summary="..."):``.
    """

    name: ClassVar[str]
    """What the operator types, e.g. ``status``."""
    summary: ClassVar[str]
    """The line ``spakky-outbox --help`` shows for it."""

    def __init_subclass__(cls, *, name: str | None = None, summary: str | None = None, **kwargs: Any) -> None:
        """Take the command's ``name`` and ``summary`` from the class statement (a base class gives none)."""
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
        if summary is not None:
            cls.summary = summary

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:  # noqa: B027 - most commands take arguments; a bare one needs none
        """Declare the command's arguments on its subparser."""


class IOutboxCommand(ICommand):
    """A command that works on the application's outbox (the application is built and started for it)."""

    @abstractmethod
    async def run(self, args: argparse.Namespace, outbox: Outbox, out: TextIO) -> int:
        """Carry the command out on ``outbox``, printing to ``out``.

        Returns:
            The exit status.

        Raises:
            OutboxCommandError: The arguments cannot be carried out (one line, exit 2).
        """


class IStandaloneCommand(ICommand):
    """A command that builds no application and parses its own arguments (``new-backend``)."""

    @abstractmethod
    def main(self, argv: Sequence[str], out: TextIO) -> int:
        """Run with the arguments after the command's name; returns the exit status."""
