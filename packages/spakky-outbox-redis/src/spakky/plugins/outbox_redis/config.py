"""Redis outbox configuration, read from ``SPAKKY_OUTBOX_REDIS__*`` variables."""

from typing import Annotated, ClassVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from spakky.core.stereotype.configuration import Configuration
from spakky.outbox.common.config import describe_settings_error
from spakky.plugins.outbox_redis.error import InvalidRedisOutboxConfigError

SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX: str = "SPAKKY_OUTBOX_REDIS__"
"""Environment prefix of every Redis outbox setting."""

DEFAULT_KEY_PREFIX: str = "{spakky-outbox}"
"""Default key prefix; the braces form the Redis Cluster hash tag."""


def has_hash_tag(prefix: str) -> bool:
    """Return whether ``prefix`` contains a non-empty Redis Cluster hash tag.

    Redis hashes only the part between the first ``{`` and the first ``}``
    after it, when that part is not empty.
    """
    start = prefix.find("{")
    if start < 0:
        return False
    end = prefix.find("}", start + 1)
    return end > start + 1


def check_key_prefix(prefix: str) -> str:
    """Return ``prefix`` when it holds a hash tag.

    Raises:
        InvalidRedisOutboxConfigError: The prefix has no hash tag, so the
            outbox keys could land in different cluster slots.
    """
    if not has_hash_tag(prefix):
        raise InvalidRedisOutboxConfigError(
            f"key prefix {prefix!r} needs a hash tag such as '{{app}}' so every "
            "outbox key (and the business keys sharing its transactions) maps to "
            "one Redis Cluster slot"
        )
    return prefix


@Configuration()
class RedisOutboxConfig(BaseSettings):
    """Where and how the Redis outbox stores its messages."""

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        env_prefix=SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX,
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
    )

    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL (``redis://``, ``rediss://`` or ``unix://``)."""
    key_prefix: str = DEFAULT_KEY_PREFIX
    """Prefix of every outbox key; must contain a hash tag such as ``{app}``."""
    published_retention_seconds: Annotated[float, Field(gt=0)] = 86400.0
    """How long a published message stays readable before Redis expires it."""
    autocommit: bool = True
    """Whether `@Transactional()` commits (EXEC) when the use case returns."""
    expired_claim_sweep: Annotated[int, Field(ge=1)] = 1000
    """Most expired claims one fetch returns to the ready set."""

    @field_validator("key_prefix")
    @classmethod
    def _validate_key_prefix(cls, value: str) -> str:
        """Reject a prefix without a hash tag."""
        if not has_hash_tag(value):
            raise ValueError("must contain a Redis Cluster hash tag such as '{app}'")
        return value

    def __init__(self) -> None:
        """Load the configuration from environment variables.

        Raises:
            InvalidRedisOutboxConfigError: A variable holds an invalid value;
                the error names the variable.
        """
        try:
            super().__init__()
        except ValidationError as error:
            raise InvalidRedisOutboxConfigError(
                describe_settings_error(SPAKKY_OUTBOX_REDIS_CONFIG_ENV_PREFIX, error)
            ) from None
