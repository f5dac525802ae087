"""What the MongoDB outbox storages of both flavours share: owner token, plans, error wording."""



from pymongo.errors import ConnectionFailure
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.error import OutboxStorageUnavailableError
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.documents import Document, to_listed_message
from spakky.plugins.outbox_mongodb.error import MongoOutboxCollectionMissingError
from spakky.plugins.outbox_mongodb.operations import (
    CollectionExists,
    OutboxQueries,
    Plan,
)


class MongoOutboxStorageBase:
    """Owner token, plans and wake-up state shared by the sync and asyncio storages."""

    def __init__(self, connections: MongoOutboxConnectionManager, outbox_config: OutboxConfig) -> None:
        self._connections = connections
        self._queries = OutboxQueries(
            collection_name=connections.config.collection,
            claim_timeout_ms=max(1, round(outbox_config.claim_timeout_seconds * 1000)),
            claim_lease_ms=max(1, round(outbox_config.claim_lease_seconds * 1000)),
            batch_max_bytes=outbox_config.batch_max_bytes,
        )
        self._seen = connections.hub.generation
        self._collection_exists = False

    @property
    def owner(self) -> str:
        """Token fencing this instance's claims."""
        return self._queries.owner

    def _unavailable(self, error: ConnectionFailure) -> OutboxStorageUnavailableError:
        return OutboxStorageUnavailableError(f"{self._connections.describe()}: {error}")

    def _missing(self) -> MongoOutboxCollectionMissingError:
        return MongoOutboxCollectionMissingError(
            f"{self._connections.describe()}: start the application once with a relay "
            "(SPAKKY_OUTBOX__RELAY=async or sync), which creates the collection and its "
            "indexes at startup; check SPAKKY_OUTBOX_MONGODB__URL, __DATABASE and "
            "__COLLECTION if it should exist"
        )

    @staticmethod
    def _exists() -> Plan[bool]:
        return (yield CollectionExists())

    @staticmethod
    def _listed(documents: list[Document]) -> list[OutboxMessage]:
        return [m for m in map(to_listed_message, documents) if m is not None]
