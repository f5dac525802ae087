"""Recording event transports with fault injection, for relay and end-to-end tests."""

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, override

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.core.pod.annotations.pod import Pod
from spakky.event.error import EventDeliveryRejectedError, EventTransportNotRunningError
from spakky.event.event_publisher import IAsyncEventTransport, IEventTransport
from spakky.outbox.application.loop import ApplicationEventLoop


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
class _Recorder:
    """State shared by the sync and async recording transports."""

    faults: TransportFaults = field(default_factory=TransportFaults)
    delivered: list[RecordedEvent] = field(default_factory=list[RecordedEvent])
    sends: int = 0
    flushes: int = 0
    buffered: list[RecordedEvent] = field(default_factory=list[RecordedEvent])
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refusal(self, record: RecordedEvent) -> str:
        explain = self.faults.refusal_reason
        return f"refused {record.event_name}" if explain is None else explain(record)

    def check_available(self) -> None:
        faults = self.faults
        if faults.closed:
            raise EventTransportNotRunningError()
        if faults.outage_calls > 0:
            faults.outage_calls -= 1
            raise TransportOutageError("injected outage")
        if time.monotonic() < faults.outage_until:
            raise TransportOutageError("injected outage window")

    def send(self, record: RecordedEvent) -> None:
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


class _RecordingBase:
    """Accessors shared by both recording transports."""

    _recorder: _Recorder

    def __init__(self) -> None:
        self._recorder = _Recorder()

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


@Pod()
class RecordingEventTransport(_RecordingBase, IEventTransport):
    """Synchronous transport that records deliveries and injects faults."""

    def __init__(self) -> None:
        """Start with no faults and nothing delivered."""
        super().__init__()

    @override
    def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        if self.faults.send_delay:
            time.sleep(self.faults.send_delay)
        self._recorder.send(RecordedEvent(event_name, payload, dict(headers), partition_key))

    @override
    def flush(self) -> None:
        if self.faults.flush_delay:
            time.sleep(self.faults.flush_delay)
        self._recorder.flush()


@Pod()
class AsyncRecordingEventTransport(_RecordingBase, IAsyncEventTransport):
    """Asynchronous transport that records deliveries and injects faults."""

    def __init__(self) -> None:
        """Start with no faults and nothing delivered."""
        super().__init__()

    @override
    async def send(
        self,
        event_name: str,
        payload: bytes,
        headers: dict[str, str],
        partition_key: str | None = None,
    ) -> None:
        if self.faults.send_delay:
            await asyncio.sleep(self.faults.send_delay)
        self._recorder.send(RecordedEvent(event_name, payload, dict(headers), partition_key))

    @override
    async def flush(self) -> None:
        if self.faults.flush_delay:
            await asyncio.sleep(self.faults.flush_delay)
        self._recorder.flush()


OUTBOX_PLUGINS: tuple[str, ...] = ("spakky-data", "spakky-domain", "spakky-event", "spakky-tracing", "spakky-outbox")
"""The Spakky plugins every outbox application loads, before its storage's."""


def outbox_plugins(*storage: str) -> set[Plugin]:
    """`OUTBOX_PLUGINS` and the ``storage`` plugins (a backend and what it needs), for ``load_plugins(include=...)``."""
    return {Plugin(name=name) for name in (*OUTBOX_PLUGINS, *storage)}


def recording_application(package: ModuleType, include: set[Plugin] | None = None) -> SpakkyApplication:
    """A Spakky application for a backend's application tests, not started yet.

    It loads the ``include`` plugins (all installed ones when None), adds both
    recording transports, so the relay delivers into them, and scans ``package``
    (the test app's use cases).
    """
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=include)
    app.add(RecordingEventTransport)
    app.add(AsyncRecordingEventTransport)
    return app.scan(package)


def run_in_application[T](app: SpakkyApplication, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    """Run ``coroutine`` on a started application's event loop and return its result."""
    return app.application_context.get(ApplicationEventLoop).run(coroutine, timeout=timeout)
