"""A fast event transport for relay load tests: one append-only file per process.

`FileSinkEventTransport` stands in for a broker so the relay runs at the
storage's speed. ``send`` stamps each load event's ``(key, seq)`` with
``time.monotonic_ns()``; ``flush`` appends one ``KEY SEQ NS`` line per record to
``$E2E_SINK_DIR/sink-<pid>.log`` in a single write, then flushes the file, and
only then does the relay acknowledge the batch. CLOCK_MONOTONIC is system-wide
on Linux, so the stamps of different relay processes compare.

Kept free of package-relative imports: ``relay_worker.py`` (run as a script)
imports it as ``file_sink``, the tests as ``tests.e2e.file_sink``.
"""

import json
import os
import time
from pathlib import Path
from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.event.event_publisher import IAsyncEventTransport

SINK_DIR_ENV = "E2E_SINK_DIR"
"""Directory the transport writes its per-process file into."""
SINK_GLOB = "sink-*.log"

type SinkRecord = tuple[str, int, int]
"""One delivered load event: partition key, sequence number in it, monotonic ns."""


def read_sink_records(directory: Path) -> dict[str, list[SinkRecord]]:
    """Every complete line of every sink file in ``directory``, by file name."""
    records: dict[str, list[SinkRecord]] = {}
    for path in sorted(directory.glob(SINK_GLOB)):
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1].decode()
        rows: list[SinkRecord] = []
        for line in complete.splitlines():
            key, seq, stamp = line.split()
            rows.append((key, int(seq), int(stamp)))
        records[path.name] = rows
    return records


def count_sink_lines(directory: Path) -> int:
    """Complete lines written so far by all sink files in ``directory``."""
    return sum(path.read_bytes().count(b"\n") for path in directory.glob(SINK_GLOB))


@Pod()
class FileSinkEventTransport(IAsyncEventTransport):
    """Buffers load events at ``send``; appends them to this process's file at ``flush``."""

    def __init__(self) -> None:
        """Write into ``$E2E_SINK_DIR/sink-<pid>.log``."""
        self._path = Path(os.environ[SINK_DIR_ENV]) / f"sink-{os.getpid()}.log"
        self._buffer: list[str] = []

    @override
    async def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        body = json.loads(payload)
        self._buffer.append(f"{body['key']} {body['seq']} {time.monotonic_ns()}\n")

    @override
    async def flush(self) -> None:
        if not self._buffer:
            return
        lines, self._buffer = self._buffer, []
        with self._path.open("a", encoding="utf-8") as sink:
            sink.write("".join(lines))
            sink.flush()
