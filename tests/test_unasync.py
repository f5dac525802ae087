"""The sync-twin generator (tools/unasync.py): conversion rules and the drift check."""

import shutil
import subprocess
import sys
from pathlib import Path

from tools.unasync import ROOT, convert, pairs

TOOL = ROOT / "tools" / "unasync.py"

SOURCE = '''"""An async thing, written once."""

import redis.asyncio
from collections.abc import Awaitable, Callable

from spakky.outbox.ports.storage import IAsyncOutboxStorage


class AsyncThing:
    """Talks to an async storage."""

    def __init__(self, storage: IAsyncOutboxStorage, write: Callable[[], Awaitable[None]]) -> None:
        self._storage = storage
        self._write = write

    async def run_async(self) -> int:
        """Await the storage; async context managers and loops too."""
        async with self._storage as held:  # an async block
            await self._write()
        async for item in held:
            await item.aclose()
        return await self._storage.fetch_pending(1, 5)
'''


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The tool's command line."""
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, check=False
    )


def test_unasync_convert_expect_async_constructs_and_names_made_sync() -> None:
    """Keywords go, ``Awaitable[X]`` is ``X``, names and prose follow the rules; layout stays."""
    twin = convert(SOURCE)
    assert "async" not in twin.replace("asyncio", "").lower().replace("sync", "")
    assert "await" not in twin
    assert "def __init__(self, storage: IOutboxStorage, write: Callable[[], None]) -> None:" in twin
    assert "class Thing:\n" in twin and "    def run(self) -> int:\n" in twin
    assert "        with self._storage as held:  # a sync block\n" in twin
    assert "        for item in held:\n            item.close()\n" in twin
    assert '"""Await the storage; sync context managers and loops too."""' in twin
    assert "import redis\n" in twin
    assert twin.count("\n") == SOURCE.count("\n")


def test_unasync_convert_async_constant_expect_sync_constant() -> None:
    """An ``ASYNC_X`` constant (a Pod name of the async flavour) becomes ``SYNC_X``; ``ASYNCX`` stays."""
    twin = convert("@Pod(name=ASYNC_STORAGE_POD_NAME)\nclass AsyncStore(ASYNCHRONOUS):\n    pass\n")
    assert twin == "@Pod(name=SYNC_STORAGE_POD_NAME)\nclass Store(ASYNCHRONOUS):\n    pass\n"


def test_unasync_convert_sqlalchemy_asyncio_expect_core_names() -> None:
    """SQLAlchemy's asyncio extension becomes SQLAlchemy itself, its ``AsyncX`` classes ``X``."""
    twin = convert("from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine\n")
    assert twin == "from sqlalchemy import Connection, Engine\n"


def test_unasync_repository_expect_every_twin_current() -> None:
    """Every checked-in twin is exactly what its async source generates."""
    result = run("--check")
    assert result.returncode == 0, result.stderr


def _package(tmp_path: Path) -> tuple[Path, Path]:
    """A tree with one async source and its freshly generated twin."""
    source = tmp_path / "pkg" / "async_thing.py"
    source.parent.mkdir()
    source.write_text(SOURCE, encoding="utf-8")
    result = run("--root", tmp_path, tmp_path)
    assert result.returncode == 0, result.stderr
    twin = source.with_name("sync_thing.py")
    assert "generated from pkg/async_thing.py" in "".join(twin.read_text().splitlines(True)[:5])
    assert run("--check", "--root", tmp_path, tmp_path).returncode == 0
    return source, twin


def test_unasync_twin_edited_by_hand_expect_check_fails_and_write_refuses(tmp_path: Path) -> None:
    """A hand edit of a twin fails the check, and regenerating refuses to drop it without --force."""
    source, twin = _package(tmp_path)
    twin.write_text(twin.read_text().replace("return ", "return 1 + "), encoding="utf-8")
    check = run("--check", "--root", tmp_path, tmp_path)
    assert check.returncode == 1
    assert "pkg/sync_thing.py: edited by hand" in check.stderr
    write = run("--root", tmp_path, tmp_path)
    assert write.returncode == 1 and "refusing to overwrite" in write.stderr
    assert "return 1 + " in twin.read_text()
    assert run("--force", "--root", tmp_path, tmp_path).returncode == 0
    assert run("--check", "--root", tmp_path, tmp_path).returncode == 0
    assert source.read_text() == SOURCE


def test_unasync_source_changed_expect_check_fails_until_regenerated(tmp_path: Path) -> None:
    """Changing the async source without regenerating fails the check; regenerating fixes it."""
    source, twin = _package(tmp_path)
    source.write_text(SOURCE.replace("fetch_pending(1, 5)", "fetch_pending(2, 5)"), encoding="utf-8")
    check = run("--check", "--root", tmp_path, tmp_path)
    assert check.returncode == 1 and "pkg/sync_thing.py: out of date" in check.stderr
    assert run("--root", tmp_path, tmp_path).returncode == 0
    assert "fetch_pending(2, 5)" in twin.read_text()
    assert run("--check", "--root", tmp_path, tmp_path).returncode == 0


def test_unasync_twin_missing_or_orphaned_expect_check_fails(tmp_path: Path) -> None:
    """A source without its twin, or a twin whose source is gone, fails the check."""
    source, twin = _package(tmp_path)
    twin.unlink()
    missing = run("--check", "--root", tmp_path, tmp_path)
    assert missing.returncode == 1 and "pkg/sync_thing.py: missing" in missing.stderr
    assert run("--root", tmp_path, tmp_path).returncode == 0
    source.unlink()
    orphan = run("--check", "--root", tmp_path, tmp_path)
    assert orphan.returncode == 1 and "its source async_thing.py is gone" in orphan.stderr


def test_unasync_repository_twins_edited_by_hand_expect_check_names_each(tmp_path: Path) -> None:
    """A hand edit of any of the repository's real generated twins fails the drift check, naming that twin.

    Runs on a copy of every real pair (same layout, so the headers' paths hold);
    the repository's own files are not touched.
    """
    real = [pair for pair in pairs([ROOT / "packages"]) if not pair.template]
    assert len(real) >= 8, [pair.twin.name for pair in real]  # relay, storages, transports, inbox
    copies: list[Path] = []
    for pair in real:
        for path in (pair.source, pair.twin):
            copy = tmp_path / path.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        copies.append(tmp_path / pair.twin.relative_to(ROOT))
    clean = run("--check", "--root", tmp_path, tmp_path)
    assert clean.returncode == 0, clean.stderr
    for twin in copies:  # the kind of fix someone makes in the file they have open
        text = twin.read_text(encoding="utf-8")
        twin.write_text(text.replace("def ", "def  ", 1) if "def " in text else text + "# fixed here\n", encoding="utf-8")
    edited = run("--check", "--root", tmp_path, tmp_path)
    assert edited.returncode == 1
    unnamed = [
        twin.relative_to(tmp_path).as_posix()
        for twin in copies
        if f"{twin.relative_to(tmp_path).as_posix()}: edited by hand" not in edited.stderr
    ]
    assert unnamed == [], edited.stderr
    untouched = run("--check")
    assert untouched.returncode == 0, untouched.stderr  # the repository's own twins are as they were
