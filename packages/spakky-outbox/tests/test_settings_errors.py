"""Settings errors name the variable and never echo a secret."""

from typing import ClassVar

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from spakky.outbox.common.config import (
    describe_settings_error,
    redact_credentials,
    redact_url,
)


class _ServiceSettings(BaseSettings):
    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(env_prefix="SPAKKY_DEMO__")

    host: str
    port: int
    password: str


def _error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(f"SPAKKY_DEMO__{name}", value)
    with pytest.raises(ValidationError) as raised:
        _ServiceSettings()
    return describe_settings_error("SPAKKY_DEMO__", raised.value)


def test_describe_settings_error_missing_field_expect_no_other_values_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing variable's error carried every other variable (the password too); none is shown."""
    text = _error(monkeypatch, PASSWORD="hunter2", PORT="5672")
    assert "hunter2" not in text and "5672" not in text
    assert text == "SPAKKY_DEMO__HOST: Field required"


def test_describe_settings_error_plain_field_expect_value_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad plain value is shown, to help fix it."""
    text = _error(monkeypatch, HOST="h", PORT="abc", PASSWORD="hunter2")
    assert text == (
        "SPAKKY_DEMO__PORT='abc': Input should be a valid integer, unable to parse string as an integer"
    )


class _Strict(BaseSettings):
    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(env_prefix="SPAKKY_STRICT__")

    password: int = 0
    api_key: int = 0
    key_prefix: int = 0
    url: int = 0


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("PASSWORD", "hunter2", None),
        ("API_KEY", "sk-live-123", None),
        ("KEY_PREFIX", "{app}", "'{app}'"),
        ("URL", "redis://admin:hunter2@db:6379/0", "'redis://***@db:6379/0'"),
        ("URL", "postgresql://u:p@ss@db/x", "'postgresql://***@db/x'"),
        ("URL", "host=db password=hunter2", "'host=db password=***'"),
    ],
)
def test_describe_settings_error_values_expect_secrets_redacted(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, shown: str | None
) -> None:
    """Passwords, keys and URL credentials never appear; other values do, to help fix them."""
    monkeypatch.setenv(f"SPAKKY_STRICT__{variable}", value)
    with pytest.raises(ValidationError) as raised:
        _Strict()
    text = describe_settings_error("SPAKKY_STRICT__", raised.value)
    assert "hunter2" not in text and "sk-live" not in text and "p@ss" not in text
    name = f"SPAKKY_STRICT__{variable}"
    assert text.startswith(f"{name}: " if shown is None else f"{name}={shown}: ")


def test_redact_credentials_expect_every_url_masked() -> None:
    """Every URL in a text loses its user and password; the rest stays."""
    assert (
        redact_credentials("cannot reach redis://:pw@a:6379/0 nor amqp://guest:guest@b/")
        == "cannot reach redis://***@a:6379/0 nor amqp://***@b/"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@host:6380/2", "redis://user@host:6380/2"),
        ("redis://:s3cret@host/0", "redis://host/0"),
        ("mysql://u:p@ss@h/db", "mysql://u@h/db"),
        ("postgresql+asyncpg://u@h/db?password=s3cret", "postgresql+asyncpg://u@h/db"),
        ("postgresql://h/db?sslmode=require&Password=s3cret&application_name=a", "postgresql://h/db?sslmode=require&application_name=a"),
        ("rediss://host/0?password=s3cret&ssl_cert_reqs=none", "rediss://host/0?ssl_cert_reqs=none"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        ("sqlite+aiosqlite:////tmp/app.db", "sqlite+aiosqlite:////tmp/app.db"),
        ("redis://:s3c/ret@127.0.0.1:1/0", "redis://***@127.0.0.1:1/0"),
        ("redis://:s3c?ret@127.0.0.1:1/0", "redis://***@127.0.0.1:1/0"),
        ("rediss//:s3cret@x", "rediss//***@x"),
    ],
)
def test_redact_url_expect_no_password_even_malformed(url: str, shown: str) -> None:
    """User and hosts stay; a password goes from the user part and the query, also from a malformed URL."""
    assert redact_url(url) == shown
    assert "s3c" not in redact_url(url)
