"""Tests of the Redis outbox configuration."""

import pytest
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import (
    DEFAULT_KEY_PREFIX,
    RedisOutboxConfig,
    check_key_prefix,
    has_hash_tag,
)
from spakky.plugins.outbox_redis.error import InvalidRedisOutboxConfigError


def test_redis_outbox_config_defaults_expect_hash_tagged_prefix() -> None:
    """The defaults point at one local Redis under a hash-tagged prefix."""
    config = RedisOutboxConfig()
    assert config.url == "redis://127.0.0.1:6379/0"
    assert config.key_prefix == DEFAULT_KEY_PREFIX
    assert has_hash_tag(config.key_prefix)
    assert config.cluster is False


def test_redis_outbox_config_env_expect_values_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settings come from ``SPAKKY_OUTBOX_REDIS__*`` variables."""
    values = {"URL": "redis://example:6380/2", "KEY_PREFIX": "app:{orders}", "CLUSTER": "true"}
    for name, value in values.items():
        monkeypatch.setenv(f"SPAKKY_OUTBOX_REDIS__{name}", value)
    config = RedisOutboxConfig()
    assert (config.url, config.key_prefix, config.cluster) == ("redis://example:6380/2", "app:{orders}", True)


def _refused(monkeypatch: pytest.MonkeyPatch, prefix: str) -> str:
    """The error message for ``prefix`` set by the environment."""
    monkeypatch.setenv("SPAKKY_OUTBOX_REDIS__KEY_PREFIX", prefix)
    with pytest.raises(InvalidRedisOutboxConfigError) as raised:
        RedisOutboxConfig()
    return str(raised.value)


@pytest.mark.parametrize("prefix", ["outbox", "{}outbox", "outbox}{", "{outbox"])
def test_redis_outbox_config_prefix_without_hash_tag_expect_error(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    """A prefix without a non-empty hash tag is refused, naming the variable."""
    assert "SPAKKY_OUTBOX_REDIS__KEY_PREFIX" in _refused(monkeypatch, prefix)


@pytest.mark.parametrize(
    "prefix", ["{a}:_outbox", "{a}:_outbox:key:x", "{a}:_data:orders", "_data:{a}"]
)
def test_redis_outbox_config_prefix_inside_other_outbox_expect_error(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    """A prefix that can lie inside another outbox's key space is refused, naming the variable."""
    message = _refused(monkeypatch, prefix)
    assert "SPAKKY_OUTBOX_REDIS__KEY_PREFIX" in message
    assert "reserves" in message


def test_connection_manager_prefix_inside_other_outbox_expect_error() -> None:
    """A configuration built in code is checked too, before any client exists."""
    config = RedisOutboxConfig().model_copy(update={"key_prefix": "{a}:_outbox:x"})
    with pytest.raises(InvalidRedisOutboxConfigError) as raised:
        RedisOutboxConnectionManager(config)
    assert str(raised.value).count("SPAKKY_OUTBOX_REDIS__KEY_PREFIX") == 1


def test_redis_outbox_config_retention_variable_expect_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retention is the core's setting: the Redis package has no variable of its own."""
    monkeypatch.setenv("SPAKKY_OUTBOX_REDIS__PUBLISHED_RETENTION_SECONDS", "5")
    assert "published_retention_seconds" not in RedisOutboxConfig().model_dump()


def test_check_key_prefix_expect_accepts_tagged_and_refuses_the_rest() -> None:
    """The programmatic check refuses a prefix that would spread over slots."""
    with pytest.raises(InvalidRedisOutboxConfigError):
        check_key_prefix("plain")
    assert check_key_prefix("x:{tag}:y") == "x:{tag}:y"
    assert check_key_prefix("{a}:key:x") == "{a}:key:x"
