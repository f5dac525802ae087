"""Failure fingerprints: one per kind of failure, whatever ids, numbers or values vary."""

from spakky.outbox.backend.claims import undecodable_reason
from spakky.outbox.common.fingerprint import (
    PATTERN_LENGTH,
    failure_fingerprint,
    failure_kind,
)


def test_fingerprint_varying_parts_expect_same_fingerprint() -> None:
    """Reasons that differ only in ids, numbers, quoted values, URLs and addresses share a fingerprint."""
    first = failure_kind(
        "EventDeliveryRejectedError: order 0b4f2c8e-1111-4222-8333-444455556666 refused by "
        "10.0.0.5:5672 after 3 tries, value 'abc', see amqp://broker/x"
    )
    second = failure_kind(
        "EventDeliveryRejectedError: order 8c1e0000-aaaa-4bbb-8ccc-dddddddddddd refused by "
        "192.168.1.9:5673 after 17 tries, value 'other', see amqp://elsewhere/y"
    )
    assert first == second
    assert first.error_type == "EventDeliveryRejectedError"
    assert first.pattern == "order <uuid> refused by <address> after <n> tries, value <value>, see <url>"
    assert len(first.fingerprint) == 16


def test_fingerprint_other_type_or_words_expect_different() -> None:
    """The error type and the words of the message both tell failures apart."""
    base = failure_fingerprint("TimeoutError: broker did not answer")
    assert failure_fingerprint("ConnectionError: broker did not answer") != base
    assert failure_fingerprint("TimeoutError: broker refused") != base
    assert failure_fingerprint("TimeoutError: broker  did\nnot answer") == base


def test_fingerprint_without_type_or_reason_expect_unknown() -> None:
    """A reason without ``Type: `` and a missing reason still get a kind of their own."""
    assert failure_kind("something odd").error_type == "unknown"
    missing = failure_kind(None)
    assert (missing.error_type, missing.pattern) == ("unknown", "no reason kept")


def test_fingerprint_undecodable_expect_type_names_decoding() -> None:
    """A message abandoned because it could not be decoded keeps that in its type."""
    kind = failure_kind(undecodable_reason(ValueError("headers are not a JSON object: '[1]'")))
    assert kind.error_type == "undecodable stored message: ValueError"
    assert kind.pattern == "headers are not a JSON object: <value>"


def test_fingerprint_long_message_expect_pattern_bounded() -> None:
    """A very long reason keeps a bounded pattern."""
    kind = failure_kind("RuntimeError: " + "word " * 500)
    assert len(kind.pattern) <= PATTERN_LENGTH
