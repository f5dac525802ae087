"""`validate_message`: the field checks every storage runs before it writes a message."""

from dataclasses import replace
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from spakky.outbox.common.message import OutboxMessage, validate_message
from spakky.outbox.error import AbstractSpakkyOutboxError, InvalidOutboxMessageError


def _message() -> OutboxMessage:
    return OutboxMessage(uuid4(), "OrderPlaced", b"{}", {"traceparent": "x"}, datetime.now(UTC), partition_key="k")


def test_validate_message_well_typed_expect_accepted() -> None:
    """A message with the declared types passes, bytearray payload and no key included."""
    validate_message(_message())
    validate_message(replace(_message(), payload=bytearray(b"{}"), partition_key=None, retry_count=3))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("id", "not-a-uuid", "id must be a UUID"),
        ("event_name", 7, "event_name must be a str"),
        ("payload", "text", "payload must be bytes"),
        ("created_at", "2026-01-01", "created_at must be a datetime"),
        ("retry_count", -1, "retry_count must be a non-negative int"),
        ("retry_count", "0", "retry_count must be a non-negative int"),
        ("partition_key", 7, "partition_key must be a str or None"),
    ],
)
def test_validate_message_bad_field_expect_error_naming_field(field: str, value: object, reason: str) -> None:
    """A field of the wrong type is refused with an outbox error that names it."""
    with pytest.raises(InvalidOutboxMessageError, match=reason) as raised:
        validate_message(replace(_message(), **{field: value}))
    assert isinstance(raised.value, AbstractSpakkyOutboxError)
