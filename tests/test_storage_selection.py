"""Choosing the one active storage when several storage packages are installed."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.error import AmbiguousOutboxStorageError, UnknownOutboxStorageError
from spakky.outbox.ports.storage import IAsyncOutboxStorage, IOutboxStorage

CORE = ("spakky-data", "spakky-domain", "spakky-event", "spakky-tracing", "spakky-outbox")
BOTH = {Plugin(name=n) for n in (*CORE, "spakky-sqlalchemy", "spakky-outbox-sqlalchemy", "spakky-outbox-redis")}


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> Iterator[dict[str, str]]:
    """Environment for an app with the SQLAlchemy (SQLite file) and Redis storages."""
    saved = dict(os.environ)
    os.environ.update(
        SPAKKY_SQLALCHEMY__CONNECTION_STRING=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        SPAKKY_OUTBOX_REDIS__URL=redis_url,
        SPAKKY_OUTBOX__RELAY="off",
    )
    yield dict(os.environ)
    os.environ.clear()
    os.environ.update(saved)


def load(plugins: set[Plugin]) -> SpakkyApplication:
    """Load the plugins into a fresh application."""
    return SpakkyApplication(ApplicationContext()).load_plugins(include=plugins)


def test_selection_two_storages_unset_expect_error_listing_choices(env: dict[str, str]) -> None:
    """Two storages and no choice fail startup listing both and the variable to set."""
    with pytest.raises(AmbiguousOutboxStorageError) as caught:
        load(BOTH)
    message = str(caught.value)
    assert "redis" in message and "sqlalchemy" in message and "SPAKKY_OUTBOX__STORAGE" in message


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("redis", "spakky.plugins.outbox_redis"),
        ("sqlalchemy", "spakky.plugins.outbox_sqlalchemy"),
    ],
)
def test_selection_named_storage_expect_it_injected_over_builtin(
    env: dict[str, str], choice: str, expected: str
) -> None:
    """The named storage is the one injected, over spakky-sqlalchemy's own outbox storage."""
    os.environ["SPAKKY_OUTBOX__STORAGE"] = choice
    app = load(BOTH).start()
    try:
        context = app.application_context
        for port in (IAsyncOutboxStorage, IOutboxStorage):
            storage = context.get(port)  # type: ignore[type-abstract]
            assert type(storage).__module__.startswith(expected)
    finally:
        app.stop()


def test_selection_unknown_name_expect_error_listing_installed(env: dict[str, str]) -> None:
    """A name that is not loaded fails startup listing what is."""
    os.environ["SPAKKY_OUTBOX__STORAGE"] = "mongodb"
    with pytest.raises(UnknownOutboxStorageError) as caught:
        load(BOTH)
    assert "'mongodb'" in str(caught.value) and "redis, sqlalchemy" in str(caught.value)


def test_selection_one_storage_loaded_expect_used_without_setting(env: dict[str, str]) -> None:
    """With only one storage package loaded, it is used with no setting at all."""
    plugins = {Plugin(name=n) for n in (*CORE, "spakky-outbox-redis")}
    app = load(plugins).start()
    try:
        storage = app.application_context.get(IAsyncOutboxStorage)  # type: ignore[type-abstract]
        assert type(storage).__module__.startswith("spakky.plugins.outbox_redis")
    finally:
        app.stop()
