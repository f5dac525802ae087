"""A real Spakky application on the in-memory storage, for the core's application tests."""

import outbox_testapp as app_package
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
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


def build_app(*, storage: bool = True) -> SpakkyApplication:
    """Load the core plugins, register the in-memory storage and transports, scan the test service."""
    app = SpakkyApplication(ApplicationContext()).load_plugins(include=CORE_PLUGINS)
    app.add(InMemoryOutboxState)
    app.add(InMemoryTransaction)
    app.add(AsyncInMemoryTransaction)
    if storage:
        app.add(InMemoryOutboxStorage)
        app.add(AsyncInMemoryOutboxStorage)
    app.add(RecordingEventTransport)
    app.add(AsyncRecordingEventTransport)
    return app.scan(app_package)
