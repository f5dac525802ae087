"""The ``spakky-outbox`` subcommands, one module each, registered in `REGISTERED`.

A command is a module of this package holding its arguments, its run and its
text rendering, ending with ``COMMAND = MyCommand()`` (an `IOutboxCommand`, or
an `IStandaloneCommand` when it needs no application). Adding one touches that
new module and one line of `REGISTERED`::

    # spakky/outbox/cli/commands/oldest.py
    class OldestCommand(IOutboxCommand, name="oldest", summary="the age of the oldest pending message"):
        async def run(self, args, outbox, out):
            print((await outbox.storage.stats()).oldest_pending_age_seconds, file=out)
            return EXIT_OK

    COMMAND = OldestCommand()

and ``"oldest",`` in `REGISTERED`.
"""

from importlib import import_module

from spakky.outbox.cli.command import ICommand

REGISTERED = (
    "status",
    "abandoned",
    "requeue",
    "purge",
    "health",
    "inbox",
    "new_backend",
)
"""The modules of this package that are commands, in the order ``--help`` lists them."""


def registered_commands() -> tuple[ICommand, ...]:
    """The registered commands, in `REGISTERED` order.

    Raises:
        TypeError: A registered module's ``COMMAND`` is not an `ICommand`.
    """
    commands: list[ICommand] = []
    for module_name in REGISTERED:
        command: object = import_module(f"{__name__}.{module_name}").COMMAND
        if not isinstance(command, ICommand):
            raise TypeError(
                f"{__name__}.{module_name}.COMMAND is not an ICommand: {command!r}"
            )
        commands.append(command)
    return tuple(commands)
