"""Recording event transports with fault injection, for relay and end-to-end tests."""

from collections.abc import Coroutine
from types import ModuleType
from typing import Any

from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.testing.async_transport import AsyncRecordingEventTransport
from spakky.outbox.testing.recording import (
    RecordedEvent,
    RecordPredicate,
    TransportFaults,
    TransportOutageError,
)
from spakky.outbox.testing.sync_transport import RecordingEventTransport

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


__all__ = [
    "OUTBOX_PLUGINS",
    "AsyncRecordingEventTransport",
    "RecordPredicate",
    "RecordedEvent",
    "RecordingEventTransport",
    "TransportFaults",
    "TransportOutageError",
    "outbox_plugins",
    "recording_application",
    "run_in_application",
]
