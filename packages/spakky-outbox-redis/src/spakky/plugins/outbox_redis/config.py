"""Redis outbox configuration, read from ``SPAKKY_OUTBOX_REDIS__*`` variables."""

from typing import Annotated, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from spakky.core.stereotype.configuration import Configuration
from spakky.outbox.common.config import settings_config, settings_errors
from spakky.plugins.outbox_redis.error import InvalidRedisOutboxConfigError

SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX: str = "SPAKKY_OUTBOX_REDIS__"
"""Environment prefix of every Redis outbox setting."""
STORAGE_NAME = "redis"
"""Name of this storage for ``SPAKKY_OUTBOX__STORAGE`` (and its backend in `OutboxTarget`)."""

KEY_PREFIX_VARIABLE: str = f"{SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX}KEY_PREFIX"
"""The variable naming the key prefix, quoted in errors about it."""

SOCKET_TIMEOUT_VARIABLE: str = f"{SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX}SOCKET_TIMEOUT_SECONDS"
"""The variable bounding every wait for Redis, quoted when a wait runs out."""

DEFAULT_SOCKET_TIMEOUT_SECONDS: float = 5.0
"""Default of `RedisOutboxConfig.socket_timeout_seconds`: redis-py 8's own default, set here
because redis-py before 8.0 waits forever (our ``redis>=5.2`` allows either)."""

DEFAULT_KEY_PREFIX: str = "{spakky-outbox}"
"""Default key prefix; the braces form the Redis Cluster hash tag."""

OUTBOX_SEGMENT: str = "_outbox"
"""Key segment after the prefix under which the outbox keeps its own keys."""

DATA_SEGMENT: str = "_data"
"""Key segment after the prefix under which `RedisKeys.business` puts business keys."""

RESERVED_SEGMENTS: frozenset[str] = frozenset({OUTBOX_SEGMENT, DATA_SEGMENT})
"""Segments no prefix may contain: every key of an outbox is ``<prefix>:<reserved
segment>:<rest>``, so a prefix holding one could be the inside of another outbox."""


def hash_tag(prefix: str) -> str | None:
    """Return the Redis Cluster hash tag of ``prefix`` (between the braces), or None.

    Redis hashes only the part between the first ``{`` and the first ``}``
    after it, when that part is not empty.
    """
    start = prefix.find("{")
    if start < 0:
        return None
    end = prefix.find("}", start + 1)
    return prefix[start + 1 : end] if end > start + 1 else None


def has_hash_tag(prefix: str) -> bool:
    """Return whether ``prefix`` contains a non-empty Redis Cluster hash tag."""
    return hash_tag(prefix) is not None


def key_prefix_problem(prefix: str) -> str | None:
    """Say what is wrong with ``prefix`` as an outbox key prefix, or None when it is fine."""
    if not has_hash_tag(prefix):
        return (
            f"{prefix!r} needs a hash tag such as '{{app}}' so every outbox key (and "
            "the business keys sharing its transactions) maps to one Redis Cluster slot"
        )
    reserved = sorted(RESERVED_SEGMENTS.intersection(prefix.split(":")))
    if reserved:
        return (
            f"{prefix!r} contains the segment {reserved[0]!r}, which the outbox reserves "
            f"for its own keys ('<prefix>:{OUTBOX_SEGMENT}:...') and business keys "
            f"('<prefix>:{DATA_SEGMENT}:...'): such a prefix can lie inside the key "
            "space of another outbox and share its keys. Choose a prefix without "
            f"{sorted(RESERVED_SEGMENTS)} segments"
        )
    return None


def check_key_prefix(prefix: str) -> str:
    """Return ``prefix`` when it can hold an outbox.

    Raises:
        InvalidRedisOutboxConfigError: The prefix has no hash tag, or contains
            a reserved segment so it could overlap another outbox's keys.
    """
    problem = key_prefix_problem(prefix)
    if problem is not None:
        raise InvalidRedisOutboxConfigError(f"{KEY_PREFIX_VARIABLE}={problem}")
    return prefix


@Configuration()
class RedisOutboxConfig(BaseSettings):
    """Where and how the Redis outbox stores its messages.

    Published messages are kept as long as the core's
    ``SPAKKY_OUTBOX__PUBLISHED_RETENTION_SECONDS`` says (the relay purges them).
    """

    model_config: ClassVar[SettingsConfigDict] = settings_config(SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX)

    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL (``redis://``, ``rediss://`` or ``unix://``); any node when `cluster`."""
    key_prefix: str = DEFAULT_KEY_PREFIX
    """Prefix of every outbox key; must contain a hash tag such as ``{app}``."""
    cluster: bool = False
    """Talk to a Redis Cluster through redis-py's cluster client (``url`` names one node)."""
    autocommit: bool = True
    """Whether `@Transactional()` commits (EXEC) when the use case returns."""
    expired_claim_sweep: Annotated[int, Field(ge=1)] = 1000
    """Most lapsed claims and due retries one fetch makes claimable again."""
    socket_timeout_seconds: Annotated[float, Field(ge=0.1, allow_inf_nan=False)] = DEFAULT_SOCKET_TIMEOUT_SECONDS
    """Longest wait for a connection and for each reply, on every client of the outbox (at least 0.1).

    Every command of ours is a short script (none holds Redis for more than
    tens of milliseconds), so running out means Redis was held by someone
    else's long command (SLOWLOG shows it) or this process was stalled; the
    error names this variable. A relay retries after such an outage, the
    ``spakky-outbox`` command exits 2.
    """

    @field_validator("key_prefix")
    @classmethod
    def _validate_key_prefix(cls, value: str) -> str:
        """Reject a prefix without a hash tag or with a reserved segment."""
        problem = key_prefix_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def __init__(self) -> None:
        """Load the configuration from environment variables.

        Raises:
            InvalidRedisOutboxConfigError: A variable holds an invalid value;
                the error names the variable.
        """
        with settings_errors(SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX, InvalidRedisOutboxConfigError):
            super().__init__()
