"""What the recording transports keep: the records delivered, the faults to inject, the counts of calls."""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from spakky.event.error import EventDeliveryRejectedError, EventTransportNotRunningError


@dataclass(frozen=True)
class RecordedEvent:
    """One record a transport delivered (after a successful flush)."""

    event_name: str
    payload: bytes
    headers: dict[str, str]
    partition_key: str | None


class TransportOutageError(ConnectionError):
    """The injected outage: stands for a broker that cannot be reached."""


type RecordPredicate = Callable[[RecordedEvent], bool]


@dataclass
class TransportFaults:
    """Faults to inject; change them between (or during) relay runs."""

    refuse: RecordPredicate | None = None
    """Records matching this are refused with `EventDeliveryRejectedError` at send."""
    refuse_at_flush: RecordPredicate | None = None
    """Records matching this make the next flush raise `EventDeliveryRejectedError`."""
    fail: Callable[[RecordedEvent], Exception | None] | None = None
    """A send raises the error this returns for a record: a plain failure, as an oversized payload raises."""
    refusal_reason: Callable[[RecordedEvent], str] | None = None
    """The broker's reason for refusing a record (default ``refused <event name>``)."""
    outage_calls: int = 0
    """The next N send/flush calls fail with `TransportOutageError`."""
    outage_until: float = 0.0
    """Every call fails with `TransportOutageError` until this ``time.monotonic()``."""
    closed: bool = False
    """Every call raises `EventTransportNotRunningError`, as after shutdown."""
    flush_delay: float = 0.0
    """Seconds each flush takes."""
    send_delay: float = 0.0
    """Seconds each send takes (a broker far away)."""


@dataclass
class Recorder:
    """State shared by the sync and async recording transports: faults, counts, records."""

    faults: TransportFaults = field(default_factory=TransportFaults)
    delivered: list[RecordedEvent] = field(default_factory=list[RecordedEvent])
    sends: int = 0
    flushes: int = 0
    buffered: list[RecordedEvent] = field(default_factory=list[RecordedEvent])
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refusal(self, record: RecordedEvent) -> str:
        """The broker's reason for refusing ``record``."""
        explain = self.faults.refusal_reason
        return f"refused {record.event_name}" if explain is None else explain(record)

    def check_available(self) -> None:
        """Raise the injected outage or shutdown, if one is due now."""
        faults = self.faults
        if faults.closed:
            raise EventTransportNotRunningError()
        if faults.outage_calls > 0:
            faults.outage_calls -= 1
            raise TransportOutageError("injected outage")
        if time.monotonic() < faults.outage_until:
            raise TransportOutageError("injected outage window")

    def send(self, record: RecordedEvent) -> None:
        """Count a send; buffer ``record`` unless a fault fails or refuses it."""
        with self.lock:
            self.sends += 1
            self.check_available()
            error = None if self.faults.fail is None else self.faults.fail(record)
            if error is not None:
                raise error
            if self.faults.refuse is not None and self.faults.refuse(record):
                raise EventDeliveryRejectedError([self.refusal(record)])
            self.buffered.append(record)

    def flush(self) -> None:
        """Count a flush; deliver the buffered records unless a fault fails or refuses them."""
        with self.lock:
            self.flushes += 1
            batch, self.buffered = self.buffered, []
            self.check_available()
            refused = [
                r for r in batch
                if self.faults.refuse_at_flush is not None and self.faults.refuse_at_flush(r)
            ]
            if refused:
                raise EventDeliveryRejectedError([self.refusal(r) for r in refused])
            self.delivered.extend(batch)


class RecordingTransportBase:
    """The recorder and its accessors, shared by both recording transports."""

    _recorder: Recorder

    def __init__(self) -> None:
        self._recorder = Recorder()

    @property
    def faults(self) -> TransportFaults:
        """The faults currently injected."""
        return self._recorder.faults

    @property
    def delivered(self) -> list[RecordedEvent]:
        """Records confirmed by a successful flush, in delivery order."""
        with self._recorder.lock:
            return list(self._recorder.delivered)

    @property
    def send_calls(self) -> int:
        """How many times ``send`` was called."""
        return self._recorder.sends

    @property
    def flush_calls(self) -> int:
        """How many times ``flush`` was called."""
        return self._recorder.flushes
