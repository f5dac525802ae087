"""``spakky-outbox new-backend``: create a storage package skeleton (`spakky.outbox.scaffold`)."""

from collections.abc import Sequence
from typing import TextIO, override

from spakky.outbox.cli.command import IStandaloneCommand
from spakky.outbox.scaffold.generate import main as generate_main


class NewBackendCommand(IStandaloneCommand, name="new-backend", summary="create a storage package skeleton (new-backend --help)"):
    """Hands its arguments to the scaffold, which has its own ``--help``."""

    @override
    def main(self, argv: Sequence[str], out: TextIO) -> int:
        return generate_main(argv, out)


COMMAND = NewBackendCommand()
