"""MongoDB outbox configuration, read from ``SPAKKY_OUTBOX_MONGODB__*`` variables."""

import re
from enum import StrEnum
from typing import ClassVar

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pymongo.errors import ConfigurationError, InvalidURI
from pymongo.uri_parser import parse_uri
from spakky.core.stereotype.configuration import Configuration
from spakky.outbox.common import config as outbox_config
from spakky.outbox.common.config import settings_config, settings_errors
from spakky.plugins.outbox_mongodb.error import InvalidMongoOutboxConfigError

SPAKKY_OUTBOX_MONGODB_CONFIG_ENV_PREFIX: str = "SPAKKY_OUTBOX_MONGODB__"
"""Environment prefix of every MongoDB outbox setting."""
STORAGE_NAME = "mongodb"
"""Name of this storage for ``SPAKKY_OUTBOX__STORAGE`` (and its backend in `OutboxTarget`)."""

_DATABASE_FORBIDDEN = frozenset('/\\. "$')


def redact_url(url: str) -> str:
    """Return ``url`` without its password and query string (its options may hold secrets)."""
    return outbox_config.redact_url(url).split("?", 1)[0]


class MongoDriver(StrEnum):
    """Which asyncio driver the outbox (and the session it shares) uses."""

    PYMONGO = "pymongo"
    """PyMongo's ``AsyncMongoClient`` (default)."""
    MOTOR = "motor"
    """Motor's ``AsyncIOMotorClient``, for repositories still written with Motor."""


class ReadConcernLevel(StrEnum):
    """Read concern of the business transactions."""

    LOCAL = "local"
    MAJORITY = "majority"
    SNAPSHOT = "snapshot"


@Configuration()
class MongoOutboxConfig(BaseSettings):
    """Where and how the MongoDB outbox stores its messages."""

    model_config: ClassVar[SettingsConfigDict] = settings_config(SPAKKY_OUTBOX_MONGODB_CONFIG_ENV_PREFIX)

    url: str = "mongodb://127.0.0.1:27017/"
    """Connection string; transactions need a replica set (e.g. ``?replicaSet=rs0``)."""
    database: str = "spakky"
    """Database holding the outbox collection."""
    collection: str = "spakky_outbox"
    """Collection holding the outbox messages."""
    inbox_collection: str = "spakky_outbox_inbox"
    """Collection holding the inbox records of idempotent consumers (same database)."""
    read_concern: ReadConcernLevel = ReadConcernLevel.MAJORITY
    """Read concern of every transaction ``@Transactional()`` opens."""
    write_concern: str = "majority"
    """Write concern of transactions and relay writes: ``majority`` or a node count."""
    driver: MongoDriver = MongoDriver.PYMONGO
    """Asyncio driver: ``pymongo`` or ``motor``."""
    change_stream: bool = True
    """Wake relays with a change stream (falls back to polling when unsupported)."""
    autocommit: bool = True
    """Whether ``@Transactional()`` commits when the use case returns."""

    @field_validator("database")
    @classmethod
    def _validate_database(cls, value: str) -> str:
        if not value or len(value) > 63 or _DATABASE_FORBIDDEN.intersection(value):
            raise ValueError('must be 1-63 characters without / \\ . " $ or spaces')
        return value

    @field_validator("collection", "inbox_collection")
    @classmethod
    def _validate_collection(cls, value: str) -> str:
        if not value or "$" in value or "\0" in value or value.startswith("system."):
            raise ValueError("must be non-empty, without '$', not starting with 'system.'")
        return value

    @field_validator("write_concern")
    @classmethod
    def _validate_write_concern(cls, value: str) -> str:
        if value == "majority" or (value.isdigit() and int(value) >= 1):
            return value
        raise ValueError("must be 'majority' or a number of nodes >= 1")

    @property
    def write_concern_w(self) -> int | str:
        """The write concern's ``w`` value as PyMongo takes it."""
        return int(self.write_concern) if self.write_concern.isdigit() else self.write_concern

    def env_names_left_default(self, *fields: str) -> tuple[str, ...]:
        """Names of the variables of ``fields`` that were not set (left at their default)."""
        return tuple(
            f"{SPAKKY_OUTBOX_MONGODB_CONFIG_ENV_PREFIX}{name.upper()}"
            for name in fields
            if name not in self.model_fields_set
        )

    def __init__(self) -> None:
        """Load the configuration from environment variables.

        Raises:
            InvalidMongoOutboxConfigError: A variable holds an invalid value;
                the error names the variable (a URL is shown without password).
        """
        with settings_errors(SPAKKY_OUTBOX_MONGODB_CONFIG_ENV_PREFIX, InvalidMongoOutboxConfigError):
            super().__init__()
        check_url(self.url)


def check_url(url: str) -> str:
    """Return ``url`` when PyMongo can parse it.

    Checked outside pydantic, whose error would echo the password. A
    ``mongodb+srv://`` URL is only resolved (DNS) when the client connects.

    Raises:
        InvalidMongoOutboxConfigError: Names the variable and the problem.
    """
    if url.startswith("mongodb+srv://"):
        return url
    try:
        parse_uri(url)
    except (InvalidURI, ConfigurationError, ValueError) as error:
        reason = str(error)
        password = re.search(r"://[^:@/]*:([^@/]+)@", url)
        if password:
            reason = reason.replace(password.group(1), "***")
        raise InvalidMongoOutboxConfigError(
            f"{SPAKKY_OUTBOX_MONGODB_CONFIG_ENV_PREFIX}URL={redact_url(url)!r}: {reason}"
        ) from None
    return url
