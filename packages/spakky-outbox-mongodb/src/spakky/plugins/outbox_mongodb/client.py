"""MongoDB clients shared by the outbox storages and transactions, and startup checks.

The asyncio client is PyMongo's ``AsyncMongoClient`` or Motor's (see
`spakky.plugins.outbox_mongodb.driver`); the synchronous one is always
PyMongo's ``MongoClient``.
"""

import threading
from typing import Any, override

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import ConnectionFailure, OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern
from spakky.core.pod.annotations.pod import Pod
from spakky.core.service.interfaces.service import IService
from spakky.outbox.backend.clients import StorageClients
from spakky.outbox.backend.wakeup import WakeUpHub, wake_up_hub
from spakky.outbox.common.config import OutboxConfig, RelayMode
from spakky.outbox.common.stats import OutboxTarget
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.plugins.outbox_mongodb.config import (
    STORAGE_NAME,
    MongoOutboxConfig,
    check_url,
    redact_url,
)
from spakky.plugins.outbox_mongodb.documents import (
    CODEC_OPTIONS,
    FIGURES_ENDED,
    Document,
    outbox_indexes,
)
from spakky.plugins.outbox_mongodb.driver import (
    CLIENT_OPTIONS,
    maybe_await,
    new_async_client,
)
from spakky.plugins.outbox_mongodb.error import MongoReplicaSetRequiredError
from spakky.plugins.outbox_mongodb.operations import ensure_indexes, run_plan

_NOT_A_REPLICA_SET = 20
"""``IllegalOperation``: "Transaction numbers are only allowed on a replica set member or mongos"."""

@Pod()
class MongoOutboxConnectionManager(IService):
    """Holds the outbox's MongoDB clients, checks the server at startup, closes them at stop.

    The synchronous client is shared by every thread. An asyncio client is
    bound to the event loop it first ran on, so one is kept per event loop.
    At startup (`start`) the server must run transactions (a replica set),
    and processes running a relay create the collection and its indexes.
    """

    def __init__(self, config: MongoOutboxConfig, outbox_config: OutboxConfig) -> None:
        """Prepare lazily created clients for ``config.url``."""
        check_url(config.url)
        self._config = config
        self._outbox_config = outbox_config
        self._clients = StorageClients[MongoClient[Document], Any](
            self.new_client,
            lambda client: client.close(),
            self.new_async_client,
            lambda client: maybe_await(client.close()),
        )
        self.open_sessions = 0
        """Sessions the outbox's transactions started and did not end yet (leak checks)."""
        self.hub: WakeUpHub = wake_up_hub(
            f"mongodb:{redact_url(config.url)}:{config.database}.{config.collection}"
        )
        """Process-wide wake-up signal of this outbox collection."""

    @property
    def config(self) -> MongoOutboxConfig:
        """The MongoDB outbox settings."""
        return self._config

    @property
    def outbox_config(self) -> OutboxConfig:
        """The core outbox settings (claim timeout, lease, retention)."""
        return self._outbox_config

    def target(self) -> OutboxTarget:
        """Where this outbox lives, without password, and which settings were defaulted."""
        config = self._config
        return OutboxTarget(
            backend=STORAGE_NAME,
            location=f"{redact_url(config.url)} {config.database}.{config.collection}",
            defaulted=config.env_names_left_default("url", "database", "collection"),
        )

    def describe(self) -> str:
        """``URL db.collection`` for error messages (no password)."""
        return self.target().location

    # --- clients ------------------------------------------------------------------

    @property
    def client(self) -> MongoClient[Document]:
        """The synchronous client (thread-safe connection pool)."""
        return self._clients.client

    @property
    def async_client(self) -> Any:
        """The asyncio client (PyMongo or Motor) of the running event loop."""
        return self._clients.async_client

    def new_client(self) -> MongoClient[Document]:
        """A separate synchronous client (for a change stream thread); the caller closes it."""
        return MongoClient[Document](self._config.url, **CLIENT_OPTIONS)

    def new_async_client(self) -> Any:
        """A separate asyncio client (for a change stream); the caller closes it."""
        return new_async_client(self._config)

    def _collection_options(self) -> dict[str, Any]:
        return {
            "codec_options": CODEC_OPTIONS,
            "write_concern": WriteConcern(w=self._config.write_concern_w),
            "read_preference": ReadPreference.PRIMARY,
        }

    def _named(self, client: Any, name: str) -> Any:
        """The collection ``name`` of the configured database on ``client`` (either flavour)."""
        database = client.get_database(self._config.database)
        return database.get_collection(name, **self._collection_options())

    def collection(self, client: MongoClient[Document] | None = None) -> Collection[Document]:
        """The outbox collection on ``client`` (default: the shared synchronous client)."""
        return self._named(client or self.client, self._config.collection)

    def async_collection(self, client: Any = None) -> Any:
        """The outbox collection on an asyncio ``client`` (default: the running loop's)."""
        return self._named(client or self.async_client, self._config.collection)

    def figures_collection(self, client: MongoClient[Document] | None = None) -> Collection[Document]:
        """The relays' figures collection (``<collection>_figures``) on ``client`` (default: the shared synchronous client)."""
        database = (client or self.client).get_database(self._config.database)
        return database.get_collection(f"{self._config.collection}_figures", **self._collection_options())

    def async_figures_collection(self, client: Any = None) -> Any:
        """The relays' figures collection on an asyncio ``client`` (default: the running loop's)."""
        database = (client or self.async_client).get_database(self._config.database)
        return database.get_collection(f"{self._config.collection}_figures", **self._collection_options())

    def inbox_collection(self, client: MongoClient[Document] | None = None) -> Collection[Document]:
        """The inbox collection on ``client`` (default: the shared synchronous client)."""
        return self._named(client or self.client, self._config.inbox_collection)

    def async_inbox_collection(self, client: Any = None) -> Any:
        """The inbox collection on an asyncio ``client`` (default: the running loop's)."""
        return self._named(client or self.async_client, self._config.inbox_collection)

    def inbox_location(self) -> str:
        """``URL db.collection`` of the inbox (no password)."""
        config = self._config
        return f"{redact_url(config.url)} {config.database}.{config.inbox_collection}"

    def inbox_defaulted(self) -> tuple[str, ...]:
        """The variables of the inbox's location left at their defaults."""
        return self._config.env_names_left_default("url", "database", "inbox_collection")

    def transaction_options(self) -> dict[str, Any]:
        """Options of every transaction: configured concerns, primary reads."""
        return {
            "read_concern": ReadConcern(self._config.read_concern.value),
            "write_concern": WriteConcern(w=self._config.write_concern_w),
            "read_preference": ReadPreference.PRIMARY,
        }

    # --- startup ----------------------------------------------------------------

    def check_transactions(self) -> None:
        """Fail unless the server runs multi-document transactions (a replica set).

        Raises:
            MongoReplicaSetRequiredError: The server is standalone.
            OutboxStorageUnavailableError: The server cannot be reached.
        """
        try:
            with self.client.start_session() as session:
                session.start_transaction(**self.transaction_options())
                try:
                    self.collection().find_one({}, {"_id": 1}, session=session)
                finally:
                    session.abort_transaction()
        except OperationFailure as error:
            if error.code == _NOT_A_REPLICA_SET or "replica set" in str(error):
                raise MongoReplicaSetRequiredError(
                    f"{self.describe()} answered: {error.details or error}"
                ) from None
            raise
        except ConnectionFailure as error:
            raise OutboxStorageUnavailableError(f"{self.describe()}: {error}") from error

    def create_indexes(self) -> None:
        """Create the collection and its indexes (TTL per retention) when missing, and the figures' TTL index.

        Raises:
            OutboxStorageUnavailableError: The server cannot be reached.
        """
        indexes = outbox_indexes(self._outbox_config.published_retention_seconds)
        try:
            run_plan(ensure_indexes(indexes), self.collection())
            run_plan(ensure_indexes((FIGURES_ENDED,)), self.figures_collection())
        except ConnectionFailure as error:
            raise OutboxStorageUnavailableError(f"{self.describe()}: {error}") from error

    # --- lifecycle ------------------------------------------------------------------

    @override
    def set_stop_event(self, stop_event: threading.Event) -> None:
        """Unused: the manager has no loop of its own."""

    @override
    def start(self) -> None:
        """Check transactions; a process running a relay also creates the indexes.

        Write-only processes (``SPAKKY_OUTBOX__RELAY=off``) and the
        ``spakky-outbox`` command never create the collection.
        """
        self.check_transactions()
        if self._outbox_config.relay is not RelayMode.OFF:
            self.create_indexes()

    @override
    def stop(self) -> None:
        """Close every client when the application stops."""
        self.close()

    async def aclose(self) -> None:
        """Close the running loop's asyncio client and the synchronous client."""
        await self._clients.aclose()

    def close(self) -> None:
        """Close every client; asyncio ones on their own loop when it still runs."""
        self._clients.close()
