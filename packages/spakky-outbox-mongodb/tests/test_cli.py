"""The ``spakky-outbox`` command against a MongoDB outbox."""

import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from spakky.outbox.cli.main import main
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.inbox.config import InboxConfig
from spakky.plugins.outbox_mongodb.client import MongoOutboxConnectionManager
from spakky.plugins.outbox_mongodb.config import MongoOutboxConfig
from spakky.plugins.outbox_mongodb.inbox import MongoInboxStorage
from spakky.plugins.outbox_mongodb.storage import MongoOutboxStorage
from spakky.plugins.outbox_mongodb.transaction import MongoTransaction

PLUGINS = "spakky-data,spakky-domain,spakky-event,spakky-tracing,spakky-outbox,spakky-outbox-mongodb"


@pytest.fixture
def cli_env(mongodb_url: str) -> Iterator[str]:
    """Point the command at a fresh MongoDB outbox collection."""
    saved = dict(os.environ)
    collection = f"cli_{uuid4().hex[:12]}"
    os.environ.update(
        SPAKKY_OUTBOX__STORAGE="mongodb",
        SPAKKY_OUTBOX_MONGODB__URL=mongodb_url,
        SPAKKY_OUTBOX_MONGODB__DATABASE="spakky_outbox_unit",
        SPAKKY_OUTBOX_MONGODB__COLLECTION=collection,
    )
    yield collection
    os.environ.clear()
    os.environ.update(saved)


def run(*argv: str) -> tuple[int, str]:
    """Run the command and capture what it prints."""
    out = io.StringIO()
    status = main(["--include", PLUGINS, *argv], out=out)
    return status, out.getvalue()


def test_cli_missing_collection_expect_refusal_and_nothing_created(cli_env: str) -> None:
    """Before any relay ran, the command refuses (naming the collection) and creates nothing."""
    assert run("status")[0] == 2
    manager = MongoOutboxConnectionManager(MongoOutboxConfig(), OutboxConfig())
    try:
        assert cli_env not in manager.client["spakky_outbox_unit"].list_collection_names()
    finally:
        manager.close()


def test_cli_status_requeue_purge_expect_operator_view(cli_env: str) -> None:
    """Status counts, abandoned listing with reason, requeue and purge work end to end."""
    manager = MongoOutboxConnectionManager(MongoOutboxConfig(), OutboxConfig())
    try:
        manager.create_indexes()
        storage = MongoOutboxStorage(manager, OutboxConfig())
        done, poison = (OutboxMessage(uuid4(), n, b"{}", {}, datetime.now(UTC)) for n in ("Done", "Poison"))
        with MongoTransaction(manager.config, manager):
            storage.save(done)
            storage.save(poison)
        storage.fetch_pending(10, 5)
        storage.mark_published(done.id)
        storage.abandon(poison.id, "refused: no route")
        status, text = run("status")
        assert status == 0 and "published=1" in text and "abandoned=1" in text
        status, text = run("abandoned")
        assert str(poison.id) in text and "refused: no route" in text
        assert run("requeue", "--all")[1].endswith("requeued 1 of 1\n")
        status, text = run("purge", "--published-before", "2099-01-01T00:00:00")
        assert status == 0 and "purged 1" in text
        assert "pending=1" in run("status")[1]
    finally:
        manager.collection().drop()
        manager.close()


def test_cli_inbox_status_purge_expect_records_counted_and_swept(cli_env: str) -> None:
    """``inbox status`` counts the MongoDB inbox's records, leases and oldest age; ``inbox purge`` sweeps old ones in batches.

    Records are backdated 2 days, inside the 7-day window: past it the TTL
    index removes them (the wire server hides them at once).
    """
    os.environ["SPAKKY_OUTBOX_MONGODB__INBOX_COLLECTION"] = f"inbox_{cli_env}"
    manager = MongoOutboxConnectionManager(MongoOutboxConfig(), OutboxConfig())
    try:
        status, text = run("inbox", "status")
        assert status == 0 and f"spakky_outbox_unit.inbox_{cli_env}" in text and "records 0" in text
        inbox = MongoInboxStorage(manager, InboxConfig())
        for n in range(5):
            with MongoTransaction(manager.config, manager):
                assert inbox.record("billing", f"m{n}")
        inbox.acquire_lease("mailer", "m0", 60)
        raw = manager.inbox_collection()
        two_days_ago = datetime.now(UTC) - timedelta(days=2)
        raw.update_many({"message_id": {"$in": ["m0", "m1", "m2"]}, "consumer": "billing"}, {"$set": {"recorded_at": two_days_ago}})
        status, text = run("inbox", "status", "--json")
        shown = json.loads(text.strip().splitlines()[-1])
        assert (shown["records"], shown["leased"]) == (6, 1) and shown["oldest_age_seconds"] >= 2 * 86400 - 60
        status, text = run("inbox", "purge", "--before", "1d", "--dry-run")
        assert status == 0 and "nothing changed" in text and raw.count_documents({}) == 6
        status, text = run("inbox", "purge", "--before", "1d", "--batch", "2")
        assert status == 0
        assert [line.split()[1] for line in text.splitlines() if line.startswith("purged")] == ["2", "3"]
        assert sorted((d["consumer"], d["message_id"]) for d in raw.find({})) == [
            ("billing", "m3"), ("billing", "m4"), ("mailer", "m0"),
        ]
    finally:
        manager.inbox_collection().drop()
        manager.close()


def test_cli_inbox_purge_inbox_collection_defaulted_expect_refused(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The outbox's location chosen, the inbox collection not: ``inbox purge`` refuses, naming the inbox's setting."""
    status, _ = run("inbox", "purge", "--before", "1d")
    err = capsys.readouterr().err
    assert status == 2
    assert "refuses to change an inbox" in err and "set SPAKKY_OUTBOX_MONGODB__INBOX_COLLECTION," in err
