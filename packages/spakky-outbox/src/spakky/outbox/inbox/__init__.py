"""The inbox: event handlers that apply each delivered message once.

Mark an ``@on_event`` method of an ``@EventHandler`` with `Idempotent` (beside
``@Transactional()``): the handler runs only for a message its consumer has
not handled before, and the inbox record commits with its business writes.
"""

from spakky.outbox.inbox.annotation import Idempotent, InboxMode

__all__ = ["Idempotent", "InboxMode"]
