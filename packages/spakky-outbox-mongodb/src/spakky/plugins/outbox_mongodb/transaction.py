"""Spakky transactions over a MongoDB session bound to the current context.

A ``@Transactional()`` use case starts a ``ClientSession`` and a transaction.
Business repositories pass `current_async_session()` (or `current_session()`)
to their own collection calls, on the session's client; the outbox ``save``
inserts through the same session, so business documents and messages commit
or abort together. Where the installed PyMongo has ``ClientSession.bind()``
(4.17+), the session is also bound, so calls on that client inside the use
case join the transaction even without ``session=``; calls on *another*
client then fail (PyMongo's rule), so use the session's client.

Transactions need a replica set or a sharded cluster. A transaction lives at
most 60 s by default, and one session must not serve concurrent operations
(no ``asyncio.gather`` over writes inside a use case).
"""

from spakky.plugins.outbox_mongodb.async_transaction import (
    AsyncMongoTransaction,
    current_async_scope,
    current_async_session,
)
from spakky.plugins.outbox_mongodb.sync_transaction import (
    MongoTransaction,
    current_scope,
    current_session,
)
from spakky.plugins.outbox_mongodb.transaction_base import (
    COMMIT_ATTEMPTS,
    translate_error,
)

__all__ = [
    "COMMIT_ATTEMPTS",
    "AsyncMongoTransaction",
    "MongoTransaction",
    "current_async_scope",
    "current_async_session",
    "current_scope",
    "current_session",
    "translate_error",
]
