"""``spakky-outbox new-backend NAME``: create a storage package that installs, registers and passes the suite.

The package starts as a working in-process storage (sync and async flavours,
its own Spakky transactions, a pydantic settings class, both entry points, a
harness and the two-file conformance run), so its tests pass before the
contributor changes a line; they then replace the stand-in database with
their own, keeping the suite green. The files come from ``template/``, with
``${name}`` placeholders filled in.
"""

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from string import Template
from typing import TextIO

from spakky.outbox.error import AbstractOutboxDetailedError, AbstractSpakkyOutboxError

TEMPLATE = Path(__file__).parent / "template"
"""The package skeleton: ``*.tmpl`` files, ``__module__`` standing for the module's folder."""
CORE_DISTRIBUTION = "spakky-outbox"
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


class InvalidBackendNameError(AbstractOutboxDetailedError):
    """Raised when a new storage's name cannot name a package, a module and a setting."""

    message = "Invalid storage name"


class BackendDirectoryExistsError(AbstractOutboxDetailedError):
    """Raised when the new package's directory already exists (nothing is overwritten)."""

    message = "The package directory already exists; nothing was written"


@dataclass(frozen=True)
class BackendNames:
    """Every name derived from the storage's name, as the templates use them."""

    storage: str
    """``SPAKKY_OUTBOX__STORAGE`` value, e.g. ``acme``."""
    distribution: str
    """Distribution and plugin name, e.g. ``spakky-outbox-acme``."""
    module: str
    """Module under ``spakky.plugins``, e.g. ``outbox_acme``."""
    Prefix: str
    """Class-name prefix, e.g. ``Acme`` (``AcmeOutboxStorage``)."""
    env_prefix: str
    """Settings prefix, e.g. ``SPAKKY_OUTBOX_ACME__``."""
    core_distribution: str
    core_requirement: str
    """The core version range the package depends on."""

    @classmethod
    def of(cls, storage: str) -> "BackendNames":
        """Derive the names from ``storage``.

        Raises:
            InvalidBackendNameError: ``storage`` is not lowercase letters and
                digits, optionally joined by single underscores.
        """
        if not _NAME.match(storage):
            raise InvalidBackendNameError(
                f"{storage!r}: use lowercase letters and digits, starting with a letter, "
                "words joined by single underscores (e.g. acme or acme_db)"
            )
        try:
            major = int(version(CORE_DISTRIBUTION).split(".")[0])
        except PackageNotFoundError:  # pragma: no cover - the scaffold ships in the core
            major = 9
        return cls(
            storage=storage,
            distribution=f"spakky-outbox-{storage.replace('_', '-')}",
            module=f"outbox_{storage}",
            Prefix="".join(part.capitalize() for part in storage.split("_")),
            env_prefix=f"SPAKKY_OUTBOX_{storage.upper()}__",
            core_distribution=CORE_DISTRIBUTION,
            core_requirement=f"{CORE_DISTRIBUTION}>={major}.0.0,<{major + 1}",
        )


def _import_list(*names: str) -> str:
    """Names of one ``from ... import (...)`` in the order ruff's isort keeps them."""
    return "\n    ".join(f"{name}," for name in sorted(names, key=str.lower))


def render(names: BackendNames) -> dict[Path, str]:
    """Return the package's files (path relative to its directory, content)."""
    values = {
        **asdict(names),
        "storage_classes": _import_list(
            f"{names.Prefix}OutboxStorage", f"Async{names.Prefix}OutboxStorage"
        ),
        "transaction_classes": _import_list(
            f"{names.Prefix}Transaction", f"Async{names.Prefix}Transaction"
        ),
    }
    files: dict[Path, str] = {}
    for source in sorted(TEMPLATE.rglob("*.tmpl")):
        relative = source.relative_to(TEMPLATE).with_suffix("")
        target = Path(*(names.module if p == "__module__" else p for p in relative.parts))
        files[target] = Template(source.read_text(encoding="utf-8")).substitute(values)
    return files


def generate(storage: str, into: Path) -> Path:
    """Write the package for ``storage`` into a new directory under ``into``.

    Returns:
        The package directory.

    Raises:
        InvalidBackendNameError: The name is not usable.
        BackendDirectoryExistsError: The directory exists already.
    """
    names = BackendNames.of(storage)
    root = into / names.distribution
    if root.exists() or root.is_symlink():  # a dangling symlink exists too: nothing is written through it
        raise BackendDirectoryExistsError(str(root))
    for relative, content in render(names).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return root


def _in_uv_workspace(directory: Path) -> bool:
    """Whether ``directory`` is a members folder of a uv workspace (its parent declares one)."""
    pyproject = directory.resolve().parent / "pyproject.toml"
    return pyproject.is_file() and "[tool.uv.workspace]" in pyproject.read_text(encoding="utf-8")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run ``new-backend``; returns the process exit status."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="spakky-outbox new-backend",
        description="Create a storage package skeleton that installs, registers and passes the conformance suite.",
    )
    parser.add_argument("name", help="storage name (SPAKKY_OUTBOX__STORAGE), e.g. acme")
    parser.add_argument("--into", type=Path, default=Path(), help="parent directory (default: here)")
    args = parser.parse_args(argv)
    try:
        root = generate(args.name, args.into)
    except AbstractSpakkyOutboxError as error:
        print(f"spakky-outbox new-backend: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"spakky-outbox new-backend: error: --into {str(args.into)!r}: cannot write there "
            f"({error.strerror or type(error).__name__}); choose a directory you can write to",
            file=sys.stderr,
        )
        return 2
    print(f"created {root}", file=out)
    if _in_uv_workspace(args.into):
        print(
            "workspace member: lock it with `python3 -m uv lock` (make new-backend does), "
            "then make test and make lint pick it up",
            file=out,
        )
    print(f"install, register and run the suite: cd {root} && uv run pytest", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
