"""Which message a handler call is about: the relay's message id header, else the event id."""

from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from spakky.domain.models.event import AbstractEvent
from spakky.outbox.common.message import MESSAGE_ID_HEADER
from spakky.outbox.inbox.error import InboxIdentityNotFoundError, InvalidInboxKeyError

LONGEST_KEY = 255
"""Longest consumer name or message identity every inbox stores (a SQL key column)."""

_delivered: ContextVar[Mapping[str, str] | None] = ContextVar(
    "spakky_outbox_inbox_headers", default=None
)


def _rabbitmq_headers() -> Callable[[], Mapping[str, str]] | None:
    """spakky-rabbitmq's consumers publish the headers of the message being handled."""
    try:
        from spakky.plugins.rabbitmq.auth import current_rabbitmq_message_headers
    except ImportError:  # spakky-rabbitmq not installed
        return None
    return current_rabbitmq_message_headers


_broker_headers = _rabbitmq_headers()


@contextmanager
def delivered_headers(headers: Mapping[str, str]) -> Generator[None]:
    """Make ``headers`` the headers of the message handled in this context.

    For consumers whose broker plugin does not expose them (spakky-kafka
    passes none to the handler: there the event id is the identity).
    """
    token = _delivered.set(headers)
    try:
        yield
    finally:
        _delivered.reset(token)


def current_headers() -> Mapping[str, str]:
    """The headers of the message handled in this context; empty when unknown."""
    headers = _delivered.get()
    if headers is not None:
        return headers
    if _broker_headers is not None:
        return _broker_headers()
    return {}


def find_event(args: tuple[Any, ...], kwargs: dict[str, Any]) -> AbstractEvent:
    """The event among a handler call's arguments.

    Raises:
        InboxIdentityNotFoundError: None of the arguments is an event.
    """
    for value in (*args, *kwargs.values()):
        if isinstance(value, AbstractEvent):
            return value
    raise InboxIdentityNotFoundError()


def message_identity(event: AbstractEvent) -> str:
    """The outbox message id header when the message has one, else the event's ``event_id``.

    Both stay the same when the relay or the broker delivers a message again.
    """
    header = current_headers().get(MESSAGE_ID_HEADER)
    return header if header else str(event.event_id)


def inbox_key(consumer: str, message_id: str) -> tuple[str, str]:
    """The (consumer, message identity) key of a record, refused where no inbox could store it.

    Raises:
        InvalidInboxKeyError: A part is empty or longer than `LONGEST_KEY`.
    """
    for value in (consumer, message_id):
        if not value or len(value) > LONGEST_KEY:
            raise InvalidInboxKeyError(f"got {value[:300]!r}")
    return (consumer, message_id)
