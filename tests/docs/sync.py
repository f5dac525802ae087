"""Copy each file a doc includes into its block again: ``make docs`` (``python -m tests.docs.sync``).

A block preceded by ``<!-- file: path -->`` must equal that file, which
`tests/docs/test_code_blocks.py` checks; after editing the file, this writes
it into every block that includes it. Prints the docs it changed.
"""

import sys

from tests.docs.test_code_blocks import DOCS, FENCE, MARKER, ROOT


def synced(text: str) -> str:
    """``text`` with every ``file`` block replaced by the file's content."""
    out: list[str] = []
    last = 0
    for match in FENCE.finditer(text):
        before = [line for line in text[: match.start()].splitlines() if line.strip()]
        marker = MARKER.search(before[-1]) if before else None
        if marker is None or marker["kind"] != "file":
            continue
        indent = match["indent"]
        content = (ROOT / marker["value"]).read_text()
        body = "".join(f"{indent}{line}" if line.strip() else line for line in content.splitlines(keepends=True))
        out.append(text[last : match.start("body")])
        out.append(body)
        last = match.end("body")
    out.append(text[last:])
    return "".join(out)


def main() -> int:
    """Rewrite the docs whose included files changed."""
    for doc in DOCS:
        text = doc.read_text()
        new = synced(text)
        if new != text:
            doc.write_text(new)
            print(f"updated {doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
