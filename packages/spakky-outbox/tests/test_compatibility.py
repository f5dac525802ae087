"""The 8.5 compatibility contract: import paths, names, message fields, entry point."""

import dataclasses
import inspect
from importlib import import_module
from importlib.metadata import entry_points

import pytest

NAMES = [
    ("spakky.outbox.common.message", "OutboxMessage"),
    ("spakky.outbox.common.config", "OutboxConfig"),
    ("spakky.outbox.ports.storage", "IOutboxStorage"),
    ("spakky.outbox.ports.storage", "IAsyncOutboxStorage"),
    ("spakky.outbox.bus.outbox_event_bus", "OutboxEventBus"),
    ("spakky.outbox.bus.outbox_event_bus", "AsyncOutboxEventBus"),
    ("spakky.outbox.relay.relay", "OutboxRelayBackgroundService"),
    ("spakky.outbox.relay.relay", "AsyncOutboxRelayBackgroundService"),
    ("spakky.outbox.main", "initialize"),
    ("spakky.outbox.error", "AbstractSpakkyOutboxError"),
    ("spakky.outbox", "PLUGIN_NAME"),
]


@pytest.mark.parametrize(("module", "name"), NAMES)
def test_import_path_expect_8_5_name_available(module: str, name: str) -> None:
    """Every name 8.5 published imports from the same path."""
    assert getattr(import_module(module), name) is not None


def test_outbox_message_fields_expect_8_5_positional_order() -> None:
    """OutboxMessage keeps 8.5's fields in order; new ones are appended with defaults."""
    from spakky.outbox.common.message import OutboxMessage

    fields = [f.name for f in dataclasses.fields(OutboxMessage)]
    assert fields[:10] == [
        "id", "event_name", "payload", "headers", "created_at", "published_at",
        "retry_count", "claimed_at", "partition_key", "abandoned_at",
    ]
    assert all(f.default is not dataclasses.MISSING for f in dataclasses.fields(OutboxMessage)[10:])


def test_storage_ports_expect_four_abstract_methods() -> None:
    """Only the 6.x methods are abstract, so 6.x and 8.5 storages both instantiate."""
    from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage

    expected = {"save", "fetch_pending", "mark_published", "increment_retry"}
    assert IOutboxStorage.__abstractmethods__ == expected
    assert IAsyncOutboxStorage.__abstractmethods__ == expected
    assert inspect.iscoroutinefunction(IAsyncOutboxStorage.mark_abandoned)


def test_entry_point_expect_spakky_plugins_registration() -> None:
    """The core registers ``spakky-outbox = spakky.outbox.main:initialize``."""
    found = {ep.name: ep.value for ep in entry_points(group="spakky.plugins")}
    assert found["spakky-outbox"] == "spakky.outbox.main:initialize"


def test_outbox_error_app_subclass_expect_exception_semantics() -> None:
    """An app's 8.5 subclass (no ``message``, any arguments) is raised with its args and str, as in 8.5."""
    from spakky.outbox.error import AbstractSpakkyOutboxError

    class OrderError(AbstractSpakkyOutboxError):
        pass

    assert (OrderError("detail").args, str(OrderError("detail"))) == (("detail",), "detail")
    assert str(OrderError("o-1", 409)) == "('o-1', 409)" and str(OrderError()) == ""


def test_outbox_error_ours_expect_class_message_then_detail() -> None:
    """This project's errors print their class message, then the detail they were raised with."""
    from spakky.outbox.error import (
        AbstractSpakkyOutboxError,
        InvalidOutboxConfigError,
        OutboxSerializationError,
        OutboxStorageUnavailableError,
    )

    error = OutboxStorageUnavailableError("redis://***@db:6379/0 refused the connection")
    assert str(error) == "Outbox storage is unavailable: redis://***@db:6379/0 refused the connection"
    assert error.detail == "redis://***@db:6379/0 refused the connection"
    assert str(OutboxStorageUnavailableError()) == "Outbox storage is unavailable"
    assert isinstance(error, AbstractSpakkyOutboxError)
    assert issubclass(InvalidOutboxConfigError, ValueError) and issubclass(OutboxSerializationError, ValueError)
