"""The ``spakky-outbox`` command against a real Redis outbox."""

import contextlib
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest
import redis
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.cli.command import parse_cutoff
from spakky.outbox.cli.main import main
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordingEventTransport,
)
from spakky.outbox.testing.waiting import wait_for
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.storage import RedisOutboxStorage
from spakky.plugins.outbox_redis.transaction import RedisTransaction

PLUGINS = "spakky-data,spakky-domain,spakky-event,spakky-tracing,spakky-outbox,spakky-outbox-redis"


@pytest.fixture
def cli_env(redis_url: str) -> Iterator[str]:
    """Point the command at a fresh Redis outbox prefix; delete its keys afterwards."""
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
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def run(*argv: str) -> tuple[int, str]:
    """Run the command and capture what it prints."""
    out = io.StringIO()
    status = main(["--include", PLUGINS, *argv], out=out)
    return status, out.getvalue()


@pytest.fixture
def seeder(cli_env: str) -> Iterator[tuple[RedisOutboxStorage, RedisTransaction]]:
    """A storage instance (one relay) and a transaction on the command's outbox, to seed it."""
    config = RedisOutboxConfig()
    manager = RedisOutboxConnectionManager(config)
    yield RedisOutboxStorage(manager, config, OutboxConfig()), RedisTransaction(config, manager)
    manager.close()


def message(name: str, key: str | None = None) -> OutboxMessage:
    """A new message."""
    return OutboxMessage(uuid4(), name, b"{}", {}, datetime.now(UTC), partition_key=key)


def test_cli_status_abandoned_purge_expect_operator_view(
    seeder: tuple[RedisOutboxStorage, RedisTransaction],
) -> None:
    """Status counts, abandoned listing with reason, and purge work end to end."""
    status, text = run("status")
    assert status == 0 and "pending=0" in text
    storage, transaction = seeder
    done, poison = message("Done"), message("Poison")
    with transaction:
        storage.save(done)
        storage.save(poison)
    storage.fetch_pending(10, 5)
    storage.mark_published(done.id)
    storage.abandon(poison.id, "refused: no route")
    status, text = run("status", "--json")
    document = json.loads(text)
    assert (document["published"], document["abandoned"], document["pending"]) == (1, 1, 0)
    status, text = run("abandoned")
    assert str(poison.id) in text and "attempts=1" in text and "error=refused: no route" in text
    status, text = run("purge", "--published-before", "2099-01-01T00:00:00", "--dry-run")
    assert status == 0 and "the 1 published now" in text
    assert json.loads(run("status", "--json")[1])["published"] == 1
    status, text = run("purge", "--published-before", "2099-01-01T00:00:00")
    assert status == 0 and "purged 1" in text
    assert json.loads(run("status", "--json")[1])["published"] == 0


def test_cli_abandoned_stored_escape_sequence_expect_escaped(
    seeder: tuple[RedisOutboxStorage, RedisTransaction],
) -> None:
    """A partition key and an error holding ESC[2J and a newline print escaped on one line."""
    storage, transaction = seeder
    poison = message("Poison", key="k\x1b[2J")
    with transaction:
        storage.save(poison)
    storage.fetch_pending(10, 5)
    storage.abandon(poison.id, "boom\x1b[2J\nforged line")
    status, text = run("abandoned")
    assert status == 0 and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 2 and lines[1].startswith(str(poison.id))
    assert "key=k\\x1b[2J " in lines[1] and lines[1].endswith("error=boom\\x1b[2J\\x0aforged line")


def test_cli_abandoned_after_five_refusals_expect_attempts_5(
    seeder: tuple[RedisOutboxStorage, RedisTransaction],
) -> None:
    """A real relay on Redis abandons after 5 refusals with MAX_RETRY_COUNT=5; the command shows 5 attempts."""
    os.environ.update(
        SPAKKY_OUTBOX__MAX_RETRY_COUNT="5",
        SPAKKY_OUTBOX__RETRY_BACKOFF_BASE_SECONDS="0",
        SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS="0.02",
    )
    app = SpakkyApplication(ApplicationContext()).load_plugins(
        include={Plugin(name=n) for n in PLUGINS.split(",")}
    )
    app.add(AsyncRecordingEventTransport)
    app.add(RecordingEventTransport)
    app.start()
    poison = message("Poison")
    try:
        transport = app.application_context.get(AsyncRecordingEventTransport)
        transport.faults.refuse = lambda record: True
        storage, transaction = seeder
        with transaction:
            storage.save(poison)
        wait_for(lambda: storage.stats().abandoned == 1, timeout=30)
        assert transport.send_calls == 5
    finally:
        app.stop()
    status, text = run("abandoned", "--json")
    assert status == 0
    [listed] = json.loads(text)["messages"]
    assert (listed["id"], listed["attempts"]) == (str(poison.id), 5)


def test_cli_bad_cutoff_expect_clear_error(cli_env: str) -> None:
    """A cutoff that is neither an age nor a timestamp is refused with a clear message."""
    with pytest.raises(Exception, match="give an age like 7d"):
        parse_cutoff("last tuesday")
    assert parse_cutoff("2d", datetime(2026, 1, 3, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)


def test_cli_requeue_all_expect_batches_and_key_order_kept(
    seeder: tuple[RedisOutboxStorage, RedisTransaction],
) -> None:
    """``requeue --all --batch 2`` requeues every abandoned message in bounded steps, back in key order."""
    storage, transaction = seeder
    sent = [message(f"m{i}", key="k") for i in range(5)]
    with transaction:
        for m in sent:
            storage.save(m)
    for m in sent:
        assert [c.id for c in storage.fetch_pending(1, 5)] == [m.id]
        storage.abandon(m.id, "refused")
    status, text = run("requeue", "--all", "--dry-run")
    assert status == 0 and "redis" in text and json.loads(run("status", "--json")[1])["abandoned"] == 5
    status, text = run("requeue", "--all", "--batch", "2")
    assert status == 0 and "requeued 5" in text
    stats = json.loads(run("status", "--json")[1])
    assert (stats["abandoned"], stats["pending"]) == (0, 5)
    claimed = [m.id for m in storage.fetch_pending(10, 5)]
    assert claimed == [m.id for m in sent][: len(claimed)] and claimed


def test_cli_requeue_default_prefix_expect_refused_naming_variable(cli_env: str) -> None:
    """A destructive command on a key prefix left at its default is refused, naming the variable."""
    del os.environ["SPAKKY_OUTBOX_REDIS__KEY_PREFIX"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status, _ = run("requeue", "--all")
    assert status == 2
    assert "SPAKKY_OUTBOX_REDIS__KEY_PREFIX" in err.getvalue()
