"""The ``spakky-outbox`` command against a real Redis outbox."""

import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from spakky.outbox.cli.main import main, parse_cutoff
from spakky.outbox.common.message import OutboxMessage

PLUGINS = "spakky-data,spakky-domain,spakky-event,spakky-tracing,spakky-outbox,spakky-outbox-redis"


@pytest.fixture
def cli_env(redis_url: str) -> Iterator[str]:
    """Point the command at a fresh Redis outbox prefix."""
    saved = dict(os.environ)
    prefix = "{cli-" + uuid4().hex[:8] + "}"
    os.environ.update(
        SPAKKY_OUTBOX__STORAGE="redis",
        SPAKKY_OUTBOX_REDIS__URL=redis_url,
        SPAKKY_OUTBOX_REDIS__KEY_PREFIX=prefix,
    )
    yield prefix
    os.environ.clear()
    os.environ.update(saved)


def run(*argv: str) -> tuple[int, str]:
    """Run the command and capture what it prints."""
    out = io.StringIO()
    status = main(["--include", PLUGINS, *argv], out=out)
    return status, out.getvalue()


def test_cli_status_requeue_purge_expect_operator_view(cli_env: str, redis_url: str) -> None:
    """Status counts, abandoned listing with reason, requeue and purge work end to end."""
    import redis
    from spakky.plugins.outbox_redis.config import RedisOutboxConfig
    from spakky.plugins.outbox_redis.storage import RedisOutboxStorage

    status, text = run("status")
    assert status == 0 and "pending=0" in text
    config = RedisOutboxConfig()
    assert config.key_prefix == cli_env
    client = redis.Redis.from_url(redis_url)
    try:
        from spakky.outbox.common.config import OutboxConfig
        from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
        from spakky.plugins.outbox_redis.transaction import RedisTransaction

        manager = RedisOutboxConnectionManager(config)
        storage = RedisOutboxStorage(manager, config, OutboxConfig())
        transaction = RedisTransaction(config, manager)
        done, poison = (OutboxMessage(uuid4(), n, b"{}", {}, datetime.now(UTC)) for n in ("Done", "Poison"))
        with transaction:
            storage.save(done)
            storage.save(poison)
        storage.fetch_pending(10, 5)
        storage.mark_published(done.id)
        storage.abandon(poison.id, "refused: no route")
        status, text = run("status")
        assert "published=1" in text and "abandoned=1" in text
        status, text = run("abandoned")
        assert str(poison.id) in text and "refused: no route" in text
        assert run("requeue", "--all") == (0, "requeued 1\n")
        status, text = run("purge", "--published-before", "2099-01-01T00:00:00")
        assert status == 0 and "purged 1" in text
        assert "pending=1" in run("status")[1]
    finally:
        for key in client.scan_iter(match=cli_env + "*"):
            client.delete(key)
        client.close()


def test_cli_bad_cutoff_expect_clear_error(cli_env: str) -> None:
    """A cutoff that is neither an age nor a timestamp is refused with a clear message."""
    with pytest.raises(Exception, match="give an age like 7d"):
        parse_cutoff("last tuesday")
    assert parse_cutoff("2d", datetime(2026, 1, 3, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)
