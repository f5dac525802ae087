"""Every fenced code block of the docs runs, or is a file a test runs (docs/contributing.md#code-blocks).

The docs are README.md, docs/**/*.md and packages/*/README.md. A block is
checked by what the last non-blank line before its fence says:

- ``<!-- file: path/in/repo -->``: the block is that file, character for
  character (the file is what a test runs, e.g. a quickstart project);
- ``<!-- not run: why -->``: the rare block that cannot run, with the reason;
- nothing: ``python`` blocks run as a script, ``bash``/``sh`` blocks with
  ``bash -euo pipefail``, both in a scratch directory and home with the
  workspace's venv first on ``PATH`` (pip refuses to install anywhere);
  ``toml``/``json`` blocks must parse.
"""

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.examples.venvs import ROOT, clean_env

DOCS = sorted(
    {ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("packages/*/README.md")}
)
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*(?P<kind>file|not run):\s*(?P<value>.*?)\s*-->\s*$")
RUN = {"python", "bash", "sh"}
PARSE = {"toml": tomllib.loads, "json": json.loads}
QUICKSTARTS = ROOT / "examples" / "quickstart"
TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    """One fenced block of a doc."""

    doc: Path
    line: int
    lang: str
    body: str
    marker: tuple[str, str] | None
    """(``file`` or ``not run``, its value), from the line before the fence."""

    @property
    def name(self) -> str:
        """``docs/usage.md:12``."""
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc``, with their markers."""
    text = doc.read_text()
    found: list[Block] = []
    for match in FENCE.finditer(text):
        before = [line for line in text[: match.start()].splitlines() if line.strip()]
        marker = MARKER.search(before[-1]) if before else None
        indent = match["indent"]
        body = "".join(
            line.removeprefix(indent) if line.strip() else line.lstrip(" ")
            for line in match["body"].splitlines(keepends=True)
        )
        found.append(
            Block(
                doc, text.count("\n", 0, match.start()) + 1, match["lang"], body,
                (marker["kind"], marker["value"]) if marker else None,
            )
        )
    return found


ALL = [block for doc in DOCS for block in blocks(doc)]


def test_docs_found_expect_blocks_of_every_kind() -> None:
    """The collection finds the docs and their blocks (an empty list would check nothing)."""
    assert {ROOT / "README.md", ROOT / "docs" / "usage.md"} <= set(DOCS)
    kinds = {block.marker[0] if block.marker else block.lang for block in ALL}
    assert {"file", "not run"} <= kinds and kinds & RUN, kinds


@pytest.mark.parametrize("block", ALL, ids=lambda b: b.name)
def test_doc_code_block_expect_runs_or_is_a_tested_file(block: Block, tmp_path: Path) -> None:
    """The block is the file it names, is marked with why it cannot run, or runs (parses) cleanly."""
    if block.marker is not None:
        kind, value = block.marker
        if kind == "not run":
            assert len(value.split()) >= 3, f"{block.name}: say why the block cannot run"
            return
        path = ROOT / value
        assert path.is_file(), f"{block.name}: {value} does not exist"
        assert block.body == path.read_text(), f"{block.name} differs from {value}: copy the file again"
        return
    if block.lang in PARSE:
        PARSE[block.lang](block.body)
        return
    assert block.lang in RUN, (
        f"{block.name}: a ```{block.lang or '(no language)'} block must run: give it a language that "
        "runs, include a file a test runs (<!-- file: path -->) or say why not (<!-- not run: why -->)"
    )
    script = tmp_path / "block"
    script.write_text(block.body)
    # In a scratch directory with a scratch home, never the repository: a block may write
    # where it runs. pip refuses to install outside a venv, so a block that installs fails.
    command = [sys.executable] if block.lang == "python" else ["bash", "-euo", "pipefail"]
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(
        PATH=f"{Path(sys.executable).parent}:{clean_env()['PATH']}", HOME=str(home),
        PIP_REQUIRE_VIRTUALENV="1", PYTHONUSERBASE=str(home / ".local"), XDG_CACHE_HOME=str(home / ".cache"),
    )
    result = subprocess.run(
        [*command, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, f"{block.name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


@pytest.mark.parametrize(
    "project", sorted(p for p in QUICKSTARTS.iterdir() if p.is_dir() and not p.name.startswith(".")),
    ids=lambda p: p.name,
)
def test_quickstart_project_expect_every_file_shown_in_the_docs(project: Path) -> None:
    """A quickstart page shows the whole project: each of its files is a ``file`` block somewhere."""
    shown = {ROOT / b.marker[1] for b in ALL if b.marker is not None and b.marker[0] == "file"}
    files = {
        p for p in project.rglob("*")
        if p.is_file() and not any(part == "__pycache__" or part.startswith(".") for part in p.parts)
    }
    assert files and files <= shown, sorted(str(p.relative_to(ROOT)) for p in files - shown)
