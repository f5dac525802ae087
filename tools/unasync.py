"""Generate the sync twin of every async source: async written once, sync generated.

A source is a module named ``async_<name>.py`` (or a scaffold template
``async_<name>.py.tmpl``); its twin ``sync_<name>.py`` is written beside it and
checked in. The conversion works on tokens, so layout and comments survive:

- ``async`` before ``def`` / ``with`` / ``for`` and every ``await`` are dropped;
- ``Awaitable[X]`` becomes ``X``;
- names follow a few rules: ``AsyncX`` / ``IAsyncX`` / ``AbstractAsyncX`` lose
  ``Async``, ``x_async`` loses ``_async``, module ``async_x`` becomes ``sync_x``,
  constant ``ASYNC_X`` becomes ``SYNC_X``,
  plus the table `NAMES` (``__aenter__`` -> ``__enter__``) and `DOTTED`
  (``redis.asyncio`` -> ``redis``);
- docstrings and comments get the same renames, and "async" reads "sync".

Whatever really differs between the flavours (sleeping, waiting, a side task)
is a hand-written pair of functions or classes named by those rules, e.g.
``sleep_async`` / ``sleep`` in one module, which the async source calls.

Each twin starts with a header naming its source and the source's sha256.
``--check`` fails when a twin is missing or differs from what its source
generates (a hand edit, or a source changed without regenerating), and when a
twin's source is gone. Writing refuses to overwrite a twin edited by hand
(its source unchanged since it was generated) unless ``--force`` is given.

Usage: ``python tools/unasync.py [--check] [--force] [PATH ...]`` (paths:
sources, twins or folders; default ``packages/``). ``make unasync`` writes,
``make lint`` checks.
"""

import argparse
import hashlib
import io
import re
import subprocess
import sys
import tokenize
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository root; header paths start from it (``--root`` for another tree)."""
TOOL = "tools/unasync.py"

NAMES: dict[str, str] = {
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "aclose": "close",
    "aiter": "iter",
    "anext": "next",
    "asynccontextmanager": "contextmanager",
    "StopAsyncIteration": "StopIteration",
    "ASYNC": "SYNC",
}
"""Names the rules below do not cover."""

DOTTED: dict[tuple[str, ...], tuple[str, ...]] = {
    ("redis", "asyncio"): ("redis",),
    ("sqlalchemy", "ext", "asyncio"): ("sqlalchemy",),
}
"""Dotted paths whose async module is a sub-module of the sync one."""

_PREFIX = re.compile(r"^(_*)(I|Abstract)?Async(?=[A-Z])")
_CONSTANT = re.compile(r"^(_*)ASYNC_(?=[A-Z0-9])")
_SUFFIX = re.compile(r"^(\w+?)_async$")
_INFIX = re.compile(r"^(\w+?)_async_(\w+)$")
_LEADING = re.compile(r"^(_*)async_(\w+)$")
_WORD = re.compile(r"(?:\b([Aa]n) )?(\.?)([A-Za-z_][A-Za-z0-9_]*)")
_PROSE = {
    "async": "sync",
    "Async": "Sync",
    "asynchronous": "synchronous",
    "Asynchronous": "Synchronous",
    "asyncio": "synchronous",
    "Asyncio": "Synchronous",
}
"""Words of docstrings and comments (not after a dot: ``redis.asyncio`` is a module)."""
_VOWEL = re.compile(r"^[aeiouAEIOU]")
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
_HEADER = "# Sync twin generated from {source} by {tool}; do not edit it.\n"
_HEADER_HELP = "# Change the async source and run `make unasync`: `make lint` fails while this file differs.\n"
_HEADER_HASH = "# Source sha256 (with the tool's): {digest}\n"
_HASH_LINE = re.compile(r"^# Source sha256 \(with the tool's\): ([0-9a-f]{64})$", re.MULTILINE)


def rename(name: str, *, module: bool = False) -> str:
    """The sync name of ``name`` (``module``: a module of an import path)."""
    if name in NAMES:
        return NAMES[name]
    if _PREFIX.match(name):
        return _PREFIX.sub(r"\1\2", name)
    if _CONSTANT.match(name):
        return _CONSTANT.sub(r"\1SYNC_", name)
    if module:
        return _LEADING.sub(r"\1sync_\2", name)
    for pattern, replacement in ((_INFIX, r"\1_\2"), (_SUFFIX, r"\1"), (_LEADING, r"\1\2")):
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return name


def _rename_class(name: str) -> str:
    """Names as plain strings may hold them: only the table and ``AsyncX``-style class names."""
    if name in NAMES:
        return NAMES[name]
    return _PREFIX.sub(r"\1\2", name)


def _words(text: str, renamer: Callable[[str, bool], str]) -> str:
    """Rename the words of ``text``; "an AsyncX" becomes "a X" where the article must change."""

    def one(match: re.Match[str]) -> str:
        article, dot, word = match[1], match[2], match[3]
        new = renamer(word, bool(dot))
        if article and new != word and not _VOWEL.match(new):
            article = article[0]
        return (f"{article} " if article else "") + dot + new

    return _WORD.sub(one, text)


def _prose(text: str) -> str:
    """Docstrings and comments: the renames, and "async" reads "sync"."""
    return _words(text, lambda word, dotted: (not dotted and _PROSE.get(word)) or rename(word, module=dotted))


def _string(text: str) -> str:
    """Plain strings (error messages): class names of the table and ``AsyncX`` style only."""
    return _words(text, lambda word, _: _rename_class(word))


def _is_doc(tokens: Sequence[tokenize.TokenInfo], index: int) -> bool:
    """Whether the string token at ``index`` is a statement of its own (a docstring)."""
    before = tokens[index - 1].type if index else tokenize.NEWLINE
    after = tokens[index + 1].type if index + 1 < len(tokens) else tokenize.NEWLINE
    starts = before in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING)
    return starts and after in (tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.COMMENT)


def convert(source: str) -> str:
    """Convert async Python source text to its sync twin (without header or import fixes)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(position: tuple[int, int]) -> int:
        return starts[position[0] - 1] + position[1]

    edits: list[tuple[int, int, str]] = []
    index = 0
    module_path = False
    """Inside the module path of an import statement (``from a.b import``, ``import a.b``)."""
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else token
        if token.type == tokenize.NAME and token.string in ("from", "import") and _starts_statement(tokens, index):
            module_path = True
        elif token.type in (tokenize.NEWLINE, tokenize.NL) or token.string in ("import", "as", ","):
            module_path = module_path and token.string == "," and _in_import(tokens, index)
        if token.type == tokenize.NAME and (
            token.string == "await"
            or (token.string == "async" and following.string in ("def", "with", "for"))
        ):
            edits.append((offset(token.start), offset(following.start), ""))
        elif token.type == tokenize.NAME and token.string == "Awaitable" and following.string == "[":
            edits.append((offset(token.start), offset(following.end), ""))
            depth, close = 0, index + 1
            while True:
                depth += {"[": 1, "]": -1}.get(tokens[close].string, 0)
                if depth == 0:
                    break
                close += 1
            edits.append((offset(tokens[close].start), offset(tokens[close].end), ""))
        elif token.type == tokenize.NAME:
            dotted = _dotted_at(tokens, index)
            if dotted is not None:
                length, replacement = dotted
                end = tokens[index + 2 * length - 2].end
                edits.append((offset(token.start), offset(end), ".".join(replacement)))
                index += 2 * length - 1
                continue
            renamed = rename(token.string, module=module_path)
            if renamed != token.string:
                edits.append((offset(token.start), offset(token.end), renamed))
        elif token.type == tokenize.COMMENT or (token.type == tokenize.STRING and _is_doc(tokens, index)):
            edits.append((offset(token.start), offset(token.end), _prose(token.string)))
        elif token.type in (tokenize.STRING, tokenize.FSTRING_MIDDLE):
            edits.append((offset(token.start), offset(token.end), _string(token.string)))
        index += 1
    result = source
    for begin, end, text in sorted(edits, reverse=True):
        result = result[:begin] + text + result[end:]
    return result


def _starts_statement(tokens: Sequence[tokenize.TokenInfo], index: int) -> bool:
    before = tokens[index - 1].type if index else tokenize.NEWLINE
    return before in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING)


def _in_import(tokens: Sequence[tokenize.TokenInfo], index: int) -> bool:
    """Whether the comma at ``index`` separates modules of an ``import a, b`` statement."""
    for token in reversed(tokens[:index]):
        if token.type in (tokenize.NEWLINE, tokenize.NL):
            return False
        if token.string == "import":
            return _starts_statement(tokens, tokens.index(token))
    return False


def _dotted_at(tokens: Sequence[tokenize.TokenInfo], index: int) -> tuple[int, tuple[str, ...]] | None:
    """A `DOTTED` path starting at ``index`` (not after a dot): its length and replacement."""
    if index and tokens[index - 1].string == ".":
        return None
    for path, replacement in DOTTED.items():
        window = tokens[index : index + 2 * len(path) - 1]
        if [t.string for t in window[::2]] == list(path) and all(t.string == "." for t in window[1::2]):
            return len(path), replacement
    return None


@dataclass(frozen=True)
class Pair:
    """An async source and the sync twin generated from it."""

    source: Path
    twin: Path

    @property
    def template(self) -> bool:
        """Whether this is a scaffold template (``${name}`` placeholders)."""
        return self.source.name.endswith(".tmpl")

    def header_path(self, root: Path) -> str:
        """The source as the twin's header names it (from the repository root)."""
        if not self.template:
            return self.source.relative_to(root).as_posix()
        # A template stands for the package the scaffold writes into packages/.
        parts = self.source.with_suffix("").parts
        inside = Path(*parts[parts.index("template") + 1 :])
        named = Path(*("${module}" if p == "__module__" else p for p in inside.parts))
        return f"packages/${{distribution}}/{named.as_posix()}"

    def expected(self, source_text: str, root: Path) -> str:
        """The twin's full text for ``source_text``."""
        sentinels: dict[str, str] = {}
        text = source_text
        if self.template:
            # Placeholders become identifiers that the rules treat like the names they stand for.
            def hide(match: re.Match[str]) -> str:
                name = match[1]
                sentinel = f"Qq{name}Qq" if name[:1].isupper() else f"qq{name}qq"
                sentinels[sentinel] = match[0]
                return sentinel

            text = _PLACEHOLDER.sub(hide, text)
        header = _HEADER.format(source=self.header_path(root), tool=TOOL) + _HEADER_HELP
        header += _HEADER_HASH.format(digest=_digest(source_text))
        twin = _fix_imports(header + convert(text), self.twin.with_suffix(".py").name)
        for sentinel, placeholder in sentinels.items():
            twin = twin.replace(sentinel, placeholder)
        return twin


def _digest(source_text: str) -> str:
    """The source's digest, salted with this tool's own text: new rules are no hand edit."""
    return hashlib.sha256(source_text.encode() + Path(__file__).read_bytes()).hexdigest()


def _fix_imports(text: str, filename: str) -> str:
    """Sort imports renaming put out of order and drop those only the async side used (ruff)."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--quiet", "--fix", "--exit-zero",
         "--select", "I,F401", "--stdin-filename", filename, "-"],
        input=text, capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return result.stdout


def twin_of(source: Path) -> Path:
    """``async_x.py`` -> ``sync_x.py`` beside it."""
    return source.with_name("sync_" + source.name.removeprefix("async_"))


def source_of(twin: Path) -> Path:
    """``sync_x.py`` -> ``async_x.py`` beside it."""
    return twin.with_name("async_" + twin.name.removeprefix("sync_"))


def _is_source(path: Path) -> bool:
    return path.name.startswith("async_") and path.name.endswith((".py", ".py.tmpl"))


def _is_twin(path: Path) -> bool:
    if not (path.name.startswith("sync_") and path.name.endswith((".py", ".py.tmpl"))):
        return False
    with path.open(encoding="utf-8") as lines:
        head = "".join(next(lines, "") for _ in range(5))
    return f"by {TOOL}" in head


def discover(paths: Sequence[Path]) -> Iterator[Path]:
    """Every source and twin under ``paths`` (files or folders)."""
    for path in paths:
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for candidate in candidates:
            if ".venv" in candidate.parts or not candidate.is_file():
                continue
            if _is_source(candidate) or _is_twin(candidate):
                yield candidate


def pairs(paths: Sequence[Path]) -> list[Pair]:
    """The pairs the sources and twins under ``paths`` belong to."""
    found: dict[Path, Pair] = {}
    for path in discover(paths):
        source = path if _is_source(path) else source_of(path)
        found[source] = Pair(source, twin_of(source))
    return [found[source] for source in sorted(found)]


def problem(pair: Pair, root: Path) -> str | None:
    """What is wrong with ``pair``'s twin, or None when it is what its source generates."""
    twin_name = pair.twin.relative_to(root).as_posix()
    if not pair.source.exists():
        return f"{twin_name}: its source {pair.source.name} is gone; delete the twin or restore the source"
    source_text = pair.source.read_text(encoding="utf-8")
    if not pair.twin.exists():
        return f"{twin_name}: missing; run `make unasync`"
    current = pair.twin.read_text(encoding="utf-8")
    expected = pair.expected(source_text, root)
    if _HASH_LINE.sub("", current) == _HASH_LINE.sub("", expected):
        return None
    recorded = _HASH_LINE.search(current)
    if recorded is not None and recorded[1] == _digest(source_text):
        return (
            f"{twin_name}: edited by hand (its source has not changed since it was generated); "
            f"make the change in {pair.source.name} and run `make unasync` (`--force` drops the edit)"
        )
    return f"{twin_name}: out of date with {pair.source.name}; run `make unasync`"


def main(argv: Sequence[str] | None = None) -> int:
    """Check or write the twins; returns the exit status."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="sources, twins or folders (default: packages/)")
    parser.add_argument("--check", action="store_true", help="fail on a missing, stale or hand-edited twin")
    parser.add_argument("--force", action="store_true", help="overwrite twins edited by hand")
    parser.add_argument("--root", type=Path, default=ROOT, help="the root header paths start from")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    paths = [p.resolve() for p in args.paths] or [root / "packages"]
    failed = False
    for pair in pairs(paths):
        found = problem(pair, root)
        if args.check:
            if found is not None:
                print(found, file=sys.stderr)
                failed = True
            continue
        if found is not None and "edited by hand" in found and not args.force:
            print(f"refusing to overwrite: {found}", file=sys.stderr)
            failed = True
            continue
        if pair.source.exists():
            expected = pair.expected(pair.source.read_text(encoding="utf-8"), root)
            if not pair.twin.exists() or pair.twin.read_text(encoding="utf-8") != expected:
                pair.twin.write_text(expected, encoding="utf-8")
                print(f"wrote {pair.twin.relative_to(root).as_posix()}")
    if failed and args.check:
        print("sync twins differ from their async sources (see above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
