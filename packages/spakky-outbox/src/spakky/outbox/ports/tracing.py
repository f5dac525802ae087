"""Tracing port: spans where an event is stored and where the relay sends it."""

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager

from spakky.outbox.common.message import OutboxMessage


class IOutboxTracer(ABC):
    """Opens the outbox's spans; an adapter maps them onto a tracing backend."""

    @abstractmethod
    def storing(self, message: OutboxMessage) -> AbstractContextManager[None]:
        """A span around the save of ``message``, in the caller's (business) trace.

        On entry the adapter may rewrite the trace headers of
        ``message.headers`` to this span's context, so the relay's send and the
        consumer continue from the span where the event was created.
        """

    @abstractmethod
    def sending(self, message: OutboxMessage, attempt: int, waited_seconds: float) -> AbstractContextManager[None]:
        """A span around one relay send of ``message``, linked to the span that stored it.

        Args:
            message: The claimed message, its headers as stored.
            attempt: Which delivery attempt this is (1 for the first).
            waited_seconds: Time from the message's ``created_at`` to this send.
        """
