"""``spakky-outbox inbox status|purge`` against a real Redis inbox."""

import json
from datetime import UTC, datetime, timedelta

import redis
from spakky.outbox.inbox.config import InboxConfig
from spakky.plugins.outbox_redis.client import RedisOutboxConnectionManager
from spakky.plugins.outbox_redis.config import RedisOutboxConfig
from spakky.plugins.outbox_redis.inbox import RedisInboxStorage
from spakky.plugins.outbox_redis.inbox_base import InboxKeys
from spakky.plugins.outbox_redis.transaction import RedisTransaction

from .test_cli import cli_env, run  # noqa: F401 - the fixture


def _backdate(client: redis.Redis, keys: InboxKeys, consumer: str, message_id: str, when: datetime) -> None:
    """Move a record's time (its value and index entry) to ``when``, as if written then."""
    at = round(when.timestamp() * 1000)
    client.set(keys.record(consumer, message_id), str(at), keepttl=True)
    client.zadd(keys.recorded, {keys.member(consumer, message_id): at}, xx=True)


def test_cli_inbox_status_purge_expect_records_counted_and_swept(cli_env: str) -> None:  # noqa: F811 - the fixture
    """``inbox status`` counts the Redis inbox's records, leases and oldest age; ``inbox purge`` sweeps old ones in batches."""
    status, text = run("inbox", "status")
    assert status == 0 and f"key prefix {cli_env}" in text and "records 0" in text
    config = RedisOutboxConfig()
    manager = RedisOutboxConnectionManager(config)
    keys = InboxKeys(cli_env)
    try:
        inbox = RedisInboxStorage(manager, config, InboxConfig())
        for n in range(5):
            with RedisTransaction(config, manager):
                assert inbox.record("billing", f"m{n}")
        assert inbox.acquire_lease("mailer", "m0", 60).token
        client = redis.Redis.from_url(config.url)
        two_days_ago = datetime.now(UTC) - timedelta(days=2)
        for n in range(3):
            _backdate(client, keys, "billing", f"m{n}", two_days_ago)
        status, text = run("inbox", "status", "--json")
        shown = json.loads(text.strip().splitlines()[-1])
        assert (shown["records"], shown["leased"]) == (6, 1) and shown["oldest_age_seconds"] >= 2 * 86400 - 60
        status, text = run("inbox", "purge", "--before", "1d", "--dry-run")
        assert status == 0 and "nothing changed" in text and client.zcard(keys.recorded) == 6
        status, text = run("inbox", "purge", "--before", "1d", "--batch", "2")
        assert status == 0
        assert [line.split()[1] for line in text.splitlines() if line.startswith("purged")] == ["2", "3"]
        left = sorted(InboxKeys.split(k.decode()[len(keys.records) :]) for k in client.scan_iter(match=f"{keys.records}*"))
        assert left == [("billing", "m3"), ("billing", "m4"), ("mailer", "m0")]
        client.close()
    finally:
        manager.close()
