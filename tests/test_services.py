"""The test-service layer: a missing required service skips, or fails in CI mode."""

import os
import pwd
import tempfile
import uuid
from pathlib import Path

import pytest
from spakky_outbox_testservices.private import running_private_mariadb
from spakky_outbox_testservices.resolve import (
    REQUIRE_ENV,
    SERVICES,
    docker_engine_running,
    port_open,
    required,
    resolve_kafka,
    resolve_service,
)

CLOSED = "postgresql://postgres@127.0.0.1:1/test"


def test_resolve_service_unreachable_strict_expect_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the CI setting, an unreachable required service fails the test run."""
    monkeypatch.setenv("POSTGRES_URL", CLOSED)
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="required service postgres unavailable"), resolve_service("postgres"):
        pass


def test_resolve_service_unreachable_lenient_expect_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the CI setting, an unreachable service skips with the reason."""
    monkeypatch.setenv("POSTGRES_URL", CLOSED)
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="does not answer"), resolve_service("postgres"):
        pass


def test_resolve_service_mongodb_strict_expect_skip_not_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """MongoDB is never required: even in CI mode its absence skips."""
    monkeypatch.setenv("MONGODB_URL", "mongodb://127.0.0.1:1/")
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.skip.Exception), resolve_service("mongodb"):
        pass


def test_resolve_service_named_in_require_list_expect_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service named in a comma-separated require list fails when missing, even one never required by default."""
    monkeypatch.setenv("KAFKA_URL", "kafka://127.0.0.1:1")
    monkeypatch.setenv(REQUIRE_ENV, "postgres, kafka")
    with pytest.raises(pytest.fail.Exception, match="required service kafka unavailable"), resolve_service("kafka"):
        pass


def test_resolve_service_left_out_of_require_list_expect_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service the require list leaves out skips, even one required by default."""
    monkeypatch.setenv("POSTGRES_URL", CLOSED)
    monkeypatch.setenv(REQUIRE_ENV, "kafka")
    with pytest.raises(pytest.skip.Exception, match="postgres unavailable"), resolve_service("postgres"):
        pass


def test_resolve_service_env_url_expect_used(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    """A reachable URL from the environment is the one handed to tests."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    with resolve_service("redis") as url:
        assert url == redis_url


def test_resolve_kafka_nothing_reachable_expect_private_tansu_taking_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no KAFKA_URL, nothing on 9092 and no Docker, a private Tansu serves Kafka and confirms an idempotent produce."""
    monkeypatch.delenv("KAFKA_URL", raising=False)
    if port_open(SERVICES["kafka"].default_url) or docker_engine_running():
        pytest.skip("a Kafka on 9092 or a Docker engine comes first here")
    from confluent_kafka import Producer

    with resolve_kafka() as broker:
        assert broker.tansu
        producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "acks": "all"})
        outcomes: list[object] = []
        producer.produce("services-probe", b"{}", key=b"k", on_delivery=lambda error, _: outcomes.append(error))
        assert producer.flush(30) == 0
        assert outcomes == [None]


def test_required_kafka_under_ci_setting_expect_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SPAKKY_OUTBOX_REQUIRE_SERVICES=1`` requires Kafka (Tansu stands in where no Apache Kafka runs)."""
    monkeypatch.setenv(REQUIRE_ENV, "1")
    assert required(SERVICES["kafka"])
    assert not required(SERVICES["mongodb"])


def test_private_mariadb_start_expect_machine_servers_temporary_files_kept() -> None:
    """A private mariadbd starting (and restarting) leaves the '#sql*' files of the machine's server in /tmp alone."""
    # Stands for a live temporary table of the machine's MariaDB: its files are '#sql*' in /tmp, owned by mysql.
    stand_in = Path(tempfile.gettempdir()) / f"#sql-temptable-{uuid.uuid4().hex[:8]}.MAD"
    stand_in.write_bytes(b"")
    try:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("mysql")
            os.chown(stand_in, entry.pw_uid, entry.pw_gid)
        with running_private_mariadb() as server:
            assert stand_in.exists(), "a starting private mariadbd deleted the machine server's temporary file"
            server.restart()
            assert stand_in.exists(), "a restarting private mariadbd deleted the machine server's temporary file"
    finally:
        stand_in.unlink(missing_ok=True)
