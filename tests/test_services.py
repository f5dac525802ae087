"""The test-service layer: a missing required service skips, or fails in CI mode."""

import pytest

from tests.services.resolve import REQUIRE_ENV, resolve_service

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
