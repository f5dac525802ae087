"""Tests of the Redis outbox configuration."""

import pytest
from spakky.plugins.outbox_redis.config import (
    DEFAULT_KEY_PREFIX,
    RedisOutboxConfig,
    check_key_prefix,
    has_hash_tag,
)
from spakky.plugins.outbox_redis.error import InvalidRedisOutboxConfigError


def test_redis_outbox_config_defaults_expect_hash_tagged_prefix() -> None:
    """The defaults point at local Redis under a hash-tagged prefix."""
    config = RedisOutboxConfig()
    assert config.url == "redis://127.0.0.1:6379/0"
    assert config.key_prefix == DEFAULT_KEY_PREFIX
    assert has_hash_tag(config.key_prefix)
    assert config.published_retention_seconds == 86400.0


def test_redis_outbox_config_env_expect_values_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settings come from ``SPAKKY_OUTBOX_REDIS__*`` variables."""
    monkeypatch.setenv("SPAKKY_OUTBOX_REDIS__URL", "redis://example:6380/2")
    monkeypatch.setenv("SPAKKY_OUTBOX_REDIS__KEY_PREFIX", "app:{orders}")
    config = RedisOutboxConfig()
    assert (config.url, config.key_prefix) == ("redis://example:6380/2", "app:{orders}")


@pytest.mark.parametrize("prefix", ["outbox", "{}outbox", "outbox}{", "{outbox"])
def test_redis_outbox_config_prefix_without_hash_tag_expect_error(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    """A prefix without a non-empty hash tag is refused, naming the variable."""
    monkeypatch.setenv("SPAKKY_OUTBOX_REDIS__KEY_PREFIX", prefix)
    with pytest.raises(InvalidRedisOutboxConfigError) as raised:
        RedisOutboxConfig()
    assert "SPAKKY_OUTBOX_REDIS__KEY_PREFIX" in str(raised.value)


def test_redis_outbox_config_zero_retention_expect_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A non-positive retention is refused."""
    monkeypatch.setenv("SPAKKY_OUTBOX_REDIS__PUBLISHED_RETENTION_SECONDS", "0")
    with pytest.raises(InvalidRedisOutboxConfigError):
        RedisOutboxConfig()


def test_check_key_prefix_without_hash_tag_expect_error() -> None:
    """The programmatic check refuses a prefix that would spread over slots."""
    with pytest.raises(InvalidRedisOutboxConfigError):
        check_key_prefix("plain")
    assert check_key_prefix("x:{tag}:y") == "x:{tag}:y"
