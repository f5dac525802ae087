"""A real Spakky application on the in-memory storage, for the core's application tests."""

from collections.abc import Iterator
from contextlib import contextmanager

import outbox_testapp as app_package
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.pod.annotations.pod import PodType
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    AsyncInMemoryTransaction,
    InMemoryOutboxState,
    InMemoryOutboxStorage,
    InMemoryTransaction,
)
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordingEventTransport,
    outbox_plugins,
)

CORE_PLUGINS = outbox_plugins()

STORAGES = (InMemoryOutboxStorage, AsyncInMemoryOutboxStorage)
"""The in-memory storage, both flavours."""


def memory_app(*pods: PodType) -> SpakkyApplication:
    """Load the core plugins; add the in-memory state, transactions and recording transports, then ``pods``."""
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=CORE_PLUGINS)
    for pod in (InMemoryOutboxState, InMemoryTransaction, AsyncInMemoryTransaction, *pods):
        app.add(pod)
    return app.add(RecordingEventTransport).add(AsyncRecordingEventTransport)


def build_app(*, storage: bool = True) -> SpakkyApplication:
    """The in-memory application with the storage (unless not ``storage``), scanning the test service."""
    return memory_app(*(STORAGES if storage else ())).scan(app_package)


@contextmanager
def running(app: SpakkyApplication) -> Iterator[SpakkyApplication]:
    """``app`` started for the block, stopped when it ends (also on a failure)."""
    started = app.start()
    try:
        yield started
    finally:
        started.stop()
