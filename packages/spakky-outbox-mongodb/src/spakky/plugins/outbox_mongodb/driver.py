"""The Motor shim: PyMongo's asyncio API and Motor differ in what is awaited.

PyMongo's ``AsyncMongoClient`` is the asyncio driver; Motor's
``AsyncIOMotorClient`` (deprecated by MongoDB) is accepted instead with
``SPAKKY_OUTBOX_MONGODB__DRIVER=motor``. For what the outbox calls, they differ
only in which calls return an awaitable: ``start_session``,
``start_transaction``, ``aggregate`` and ``watch`` are coroutines in PyMongo
and plain calls in Motor, ``close`` the other way round. `maybe_await` covers
all of them; everything else is awaited in both.
"""

import inspect
from importlib import import_module
from typing import Any

from pymongo.client_session import ClientSession
from spakky.plugins.outbox_mongodb.config import MongoDriver, MongoOutboxConfig

type AsyncSession = Any
"""A session of the asyncio driver: PyMongo's ``AsyncClientSession`` or Motor's."""
type Session = ClientSession
"""A session of the synchronous driver (the sync twin of `AsyncSession`)."""

CLIENT_OPTIONS: dict[str, Any] = {"uuidRepresentation": "standard", "tz_aware": True}
"""Client defaults (also for business code sharing the client): standard UUIDs, aware dates."""


async def maybe_await(value: Any) -> Any:
    """Return ``value``, awaited when it is awaitable."""
    return await value if inspect.isawaitable(value) else value


def is_motor(client: Any) -> bool:
    """Whether ``client`` (or a session's client) comes from Motor."""
    return type(client).__module__.startswith("motor.")


def new_async_client(config: MongoOutboxConfig) -> Any:
    """A new asyncio client of the configured driver (PyMongo async or Motor)."""
    if config.driver is MongoDriver.MOTOR:
        motor: Any = import_module("motor.motor_asyncio")
        return motor.AsyncIOMotorClient(config.url, **CLIENT_OPTIONS)
    from pymongo import AsyncMongoClient

    return AsyncMongoClient[dict[str, Any]](config.url, **CLIENT_OPTIONS)


async def resolved_async(value: Any) -> Any:
    """What an asyncio driver call gives, awaited when it is awaitable (`maybe_await`).

    Async sources call it where PyMongo and Motor differ; their generated sync
    twins call `resolved`.
    """
    return await maybe_await(value)


def resolved[T](value: T) -> T:
    """What a synchronous driver call gives, as is: the sync twin of `resolved_async`."""
    return value
