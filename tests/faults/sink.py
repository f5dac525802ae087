"""The fault tests' broker: per-process files, with outages and poison on demand.

`FaultSinkEventTransport` appends ``KEY SEQ NS PID`` per delivered event to
``$FAULT_SINK_DIR/sink-<pid>.log`` at flush (one write, flushed, before the
relay acknowledges). Faults come from the same directory and environment:

- while a file ``outage`` exists there, every send and flush fails with
  ``ConnectionError`` (a broker that vanished);
- an event whose payload has ``"poison": true`` makes ``send`` raise
  ``ValueError`` (a message-specific fault raised as a plain exception, as
  spakky-rabbitmq 8.5 does for an oversized payload);
- ``$FAULT_FLUSH_DELAY`` seconds per flush (a slow broker);
- a one-shot hold (`claim_hold`): the drill creates a file, the first process
  reaching the matching point takes it and stops dead there until SIGKILLed.

Kept free of package-relative imports: ``worker.py`` (run as a script) imports
it as ``sink``, the tests as ``tests.faults.sink``.
"""

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import override

from spakky.core.pod.annotations.pod import Pod
from spakky.event.event_publisher import IAsyncEventTransport

SINK_DIR_ENV = "FAULT_SINK_DIR"
FLUSH_DELAY_ENV = "FAULT_FLUSH_DELAY"
OUTAGE_FILE = "outage"
HOLD_AFTER_FLUSH = "hold-after-flush"
"""Hold a relay right after the broker confirmed a batch, before the outbox marks it published."""
HOLD_IN_HANDLER = "hold-in-handler"
"""Hold a consumer inside its handler's transaction, after the business write, before the commit."""


@dataclass(frozen=True)
class Delivery:
    """One event a relay process delivered."""

    key: str
    seq: int
    at_ns: int
    """``time.monotonic_ns()`` at flush (system-wide on Linux, so processes compare)."""
    pid: int


def read_deliveries(directory: Path) -> list[Delivery]:
    """Every complete line of every sink file, in delivery-time order."""
    deliveries: list[Delivery] = []
    for path in directory.glob("sink-*.log"):
        data = path.read_bytes()
        for line in data[: data.rfind(b"\n") + 1].decode().splitlines():
            key, seq, stamp, pid = line.split()
            deliveries.append(Delivery(key, int(seq), int(stamp), int(pid)))
    return sorted(deliveries, key=lambda d: d.at_ns)


def count_deliveries(directory: Path) -> int:
    """Complete lines written so far by every sink file."""
    return sum(path.read_bytes().count(b"\n") for path in directory.glob("sink-*.log"))


def claim_hold(directory: Path, name: str) -> Path | None:
    """Take the hold ``name`` the drill put in ``directory``; None when there is none.

    The rename is atomic, so exactly one process takes a hold. The taker
    reports what it holds with `report_held` and then never returns (the drill
    SIGKILLs it there).
    """
    try:
        os.rename(directory / name, directory / f"{name}-taken-{os.getpid()}")
    except FileNotFoundError:
        return None
    return directory / f"{name}-held-{os.getpid()}"


def hold_threshold(directory: Path, name: str) -> int | None:
    """Batches a process must have flushed before it may take the hold ``name``; None when there is none.

    The drill arms a hold before the relays start (`Drill.arm_hold_after_flush`)
    with the number in the file, so a relay fast enough to drain everything
    before the drill looks again still stops mid-drain.
    """
    try:
        text = (directory / name).read_text()
    except FileNotFoundError:
        return None
    return int(text) if text.strip() else 0


def report_held(path: Path, lines: list[str]) -> None:
    """Write what the holder holds (one item a line) to ``path`` whole, in one rename."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    os.rename(partial, path)


@Pod()
class FaultSinkEventTransport(IAsyncEventTransport):
    """Buffers events at ``send``; appends them to this process's file at ``flush``."""

    def __init__(self) -> None:
        """Write into ``$FAULT_SINK_DIR/sink-<pid>.log``."""
        self._dir = Path(os.environ[SINK_DIR_ENV])
        self._path = self._dir / f"sink-{os.getpid()}.log"
        self._delay = float(os.environ.get(FLUSH_DELAY_ENV, "0"))
        self._buffer: list[tuple[str, int]] = []

    def _check_broker(self) -> None:
        if (self._dir / OUTAGE_FILE).exists():
            self._buffer.clear()
            raise ConnectionError("broker unreachable (injected outage)")

    @override
    async def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        self._check_broker()
        body = json.loads(payload)
        if body.get("poison"):
            raise ValueError(f"event {body['key']}/{body['seq']} is too large for the broker")
        self._buffer.append((body["key"], body["seq"]))

    @override
    async def flush(self) -> None:
        if self._delay:
            await asyncio.sleep(self._delay)
        self._check_broker()
        if not self._buffer:
            return
        events, self._buffer = self._buffer, []
        stamp, pid = time.monotonic_ns(), os.getpid()
        with self._path.open("a", encoding="utf-8") as sink:
            sink.write("".join(f"{key} {seq} {stamp} {pid}\n" for key, seq in events))
            sink.flush()
