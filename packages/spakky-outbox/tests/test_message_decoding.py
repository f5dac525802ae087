"""`restored_message` and `message_id_from_text`: the fast paths storages build claimed messages with."""

import copy
import dataclasses
import pickle
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from spakky.outbox.common.message import (
    OutboxMessage,
    message_id_from_text,
    restored_message,
)


def test_message_id_from_text_canonical_expect_the_uuid_uuid_reads() -> None:
    """Canonical text gives the UUID ``UUID(text)`` gives: equal, same hash, text, version, pickles."""
    for _ in range(200):
        expected = uuid4()
        parsed = message_id_from_text(str(expected).encode())
        assert parsed == expected
        assert hash(parsed) == hash(expected)
        assert str(parsed) == str(expected)
        assert parsed.version == expected.version
        assert pickle.loads(pickle.dumps(parsed)) == expected
        assert copy.deepcopy(parsed) == expected


def test_message_id_from_text_other_forms_expect_uuid_rules() -> None:
    """Braces and upper case read as ``UUID`` reads them."""
    expected = uuid4()
    assert message_id_from_text(f"{{{expected}}}".encode()) == expected
    assert message_id_from_text(str(expected).upper().encode()) == expected


@pytest.mark.parametrize(
    "text",
    [b"", b"x" * 36, b"1234567-_234-1234-1234-123456789012", b"12345678-1234-1234-1234-12345678901g", b"12345678"],
)
def test_message_id_from_text_damaged_expect_value_error(text: bytes) -> None:
    """Damaged text raises ``ValueError`` (the storages abandon such a record with it as the reason)."""
    with pytest.raises(ValueError):
        message_id_from_text(text)


def test_restored_message_expect_same_as_constructed() -> None:
    """A restored message equals the constructed one, prints alike, stays frozen, and `replace` works."""
    now = datetime.now(UTC)
    fields = (uuid4(), "OrderPlaced", b"{}", {"traceparent": "x"}, now, None, 2, now, "k", None, "boom")
    built = OutboxMessage(*fields)
    restored = restored_message(*fields)
    assert restored == built
    assert repr(restored) == repr(built)
    assert isinstance(restored.id, UUID)
    with pytest.raises(dataclasses.FrozenInstanceError):
        restored.retry_count = 3  # pyright: ignore[reportAttributeAccessIssue]
    assert dataclasses.replace(restored, retry_count=3).retry_count == 3
