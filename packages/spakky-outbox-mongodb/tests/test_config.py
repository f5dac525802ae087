"""Settings: each bad value is refused at startup naming the variable; no password is shown."""

import pytest
from spakky.outbox.common.config import OutboxConfig
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import (
    MongoDriver,
    MongoOutboxConfig,
    ReadConcernLevel,
    redact_url,
)
from spakky.plugins.outbox_mongodb.error import InvalidMongoOutboxConfigError


def test_config_defaults_expect_documented_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset variables give the documented defaults."""
    for name in ("URL", "DATABASE", "COLLECTION", "READ_CONCERN", "WRITE_CONCERN", "DRIVER"):
        monkeypatch.delenv(f"SPAKKY_OUTBOX_MONGODB__{name}", raising=False)
    config = MongoOutboxConfig()
    assert (config.url, config.database, config.collection) == (
        "mongodb://127.0.0.1:27017/", "spakky", "spakky_outbox",
    )
    assert (config.read_concern, config.write_concern_w, config.driver) == (
        ReadConcernLevel.MAJORITY, "majority", MongoDriver.PYMONGO,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE", "my.db"),
        ("COLLECTION", "system.outbox"),
        ("COLLECTION", "out$box"),
        ("READ_CONCERN", "linearizable"),
        ("WRITE_CONCERN", "0"),
        ("WRITE_CONCERN", "all"),
        ("DRIVER", "mongoengine"),
        ("CHANGE_STREAM", "sometimes"),
    ],
)
def test_config_bad_value_expect_error_naming_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad value fails loading with our error naming the variable and the value."""
    monkeypatch.setenv(f"SPAKKY_OUTBOX_MONGODB__{variable}", value)
    with pytest.raises(InvalidMongoOutboxConfigError) as caught:
        MongoOutboxConfig()
    assert f"SPAKKY_OUTBOX_MONGODB__{variable}={value!r}" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgres://admin:s3cr3t-pw@db:5432/",
        "mongodb://admin:s3cr3t-pw@db:27017/?replicaSet=rs0&w=nonsense&bogus=",
        "mongodb://admin:s3cr3t-pw@db:27017/?authMechanism=NOPE",
    ],
)
def test_config_bad_url_expect_error_without_password(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """A URL PyMongo refuses is named in the error, never with its password."""
    monkeypatch.setenv("SPAKKY_OUTBOX_MONGODB__URL", url)
    with pytest.raises(InvalidMongoOutboxConfigError) as caught:
        MongoOutboxConfig()
    text = str(caught.value)
    assert "SPAKKY_OUTBOX_MONGODB__URL=" in text and "admin@" in text
    assert "s3cr3t-pw" not in text


def test_redact_url_expect_no_password_nor_query() -> None:
    """Shown URLs keep scheme, user and hosts, and drop the password and the options."""
    assert redact_url("mongodb://u:p%40ss@h1:1,h2:2/db?replicaSet=rs0&authSource=x") == "mongodb://u@h1:1,h2:2/db"
    assert redact_url("mongodb+srv://:pw@cluster.example/") == "mongodb+srv://cluster.example/"
    assert redact_url("mongodb://127.0.0.1:27017/") == "mongodb://127.0.0.1:27017/"


def test_target_expect_location_and_defaulted_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The administration target names the URL without password, db.collection and what was left default."""
    monkeypatch.setenv("SPAKKY_OUTBOX_MONGODB__URL", "mongodb://ops:hunter2@db1:27017/?replicaSet=rs0")
    monkeypatch.setenv("SPAKKY_OUTBOX_MONGODB__COLLECTION", "orders_outbox")
    monkeypatch.delenv("SPAKKY_OUTBOX_MONGODB__DATABASE", raising=False)
    target = MongoOutboxConnectionManager(MongoOutboxConfig(), OutboxConfig()).target()
    assert (target.backend, target.location) == ("mongodb", "mongodb://ops@db1:27017/ spakky.orders_outbox")
    assert target.defaulted == ("SPAKKY_OUTBOX_MONGODB__DATABASE",)
