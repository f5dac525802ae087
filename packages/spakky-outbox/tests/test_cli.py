"""The ``spakky-outbox`` command on a real Spakky application over the in-memory storage.

The command runs in process (``main``) with ``--scan cli_testapp.pods``, so it
reads and changes the same in-memory outbox the test seeds.
"""

import io
import json
import os
import pkgutil
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from cli_testapp import pods, store
from spakky.core.application.application import SpakkyApplication
from spakky.core.application.application_context import ApplicationContext
from spakky.core.application.plugin import Plugin
from spakky.outbox.backend.claims import undecodable_reason
from spakky.outbox.cli import commands
from spakky.outbox.cli.main import main
from spakky.outbox.cli.render import delivery_attempts, printable
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxTarget
from spakky.outbox.testing.memory import InMemoryOutboxStorage
from spakky.outbox.testing.memory_state import ManualClock, system_clock
from spakky.outbox.testing.transport import (
    AsyncRecordingEventTransport,
    RecordingEventTransport,
)
from spakky.outbox.testing.waiting import wait_for

CORE = "spakky-data,spakky-domain,spakky-event,spakky-tracing,spakky-outbox"


@pytest.fixture(autouse=True)
def clean_outbox() -> Iterator[None]:
    """An empty shared outbox and untouched ``SPAKKY_*`` variables for every test."""
    saved = dict(os.environ)
    store.reset()
    yield
    store.reset()
    os.environ.clear()
    os.environ.update(saved)


def run(*argv: str) -> tuple[int, str]:
    """Run the command on the shared outbox; return its status and what it printed."""
    out = io.StringIO()
    status = main(["--include", CORE, "--scan", "cli_testapp.pods", *argv], out=out)
    return status, out.getvalue()


def storage() -> InMemoryOutboxStorage:
    """A storage instance (one relay) over the shared outbox, for seeding."""
    return InMemoryOutboxStorage(store.STATE, OutboxConfig())


def message(
    name: str = "OrderPlaced", key: str | None = None, age: timedelta = timedelta()
) -> OutboxMessage:
    """A message created ``age`` ago."""
    return OutboxMessage(uuid4(), name, b"{}", {}, datetime.now(UTC) - age, partition_key=key)


def seed_abandoned(count: int, error: str = "refused", key: str | None = None) -> list[UUID]:
    """Store ``count`` messages and abandon them."""
    relay = storage()
    messages = [message(key=key) for _ in range(count)]
    for m in messages:
        relay.save(m)
    claimed = relay.fetch_pending(count, 5)
    assert len(claimed) == count
    for m in claimed:
        relay.abandon(m.id, error)
    return [m.id for m in messages]


def seed_published(count: int) -> None:
    """Store ``count`` messages and publish them."""
    relay = storage()
    for _ in range(count):
        relay.save(message())
    relay.mark_published_many([m.id for m in relay.fetch_pending(count, 5)])


def one_line(text: str) -> str:
    """The only line of ``text``."""
    lines = text.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ("purge", "--published-before", "1d", "--batch", "0"),
        ("purge", "--published-before", "1d", "--batch", "-5"),
        ("abandoned", "--limit", "-1"),
        ("abandoned", "--limit", "0"),
        ("abandoned", "--limit", "10001"),
        ("abandoned", "--limit", "99999999999999999999"),
        ("requeue", "--all", "--batch", "0"),
        ("health", "--max-pending-age", "0"),
        ("health", "--max-pending-age", "inf"),
        ("health", "--max-pending-age", "nan"),
    ],
)
def test_cli_number_not_positive_expect_one_line_error_exit_2(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """A zero, negative or infinite count or age is refused before anything runs (it looped forever)."""
    seed_published(3)
    assert run(*argv) == (2, "")
    line = one_line(capsys.readouterr().err)
    assert line.startswith("spakky-outbox") and argv[-2] in line
    assert store.STATE.stats().published == 3


def test_cli_abandoned_control_characters_expect_escaped_one_line_each() -> None:
    """A stored escape sequence and newline cannot clear the screen or forge a line."""
    forged = "boom\x1b[2J\n00000000-0000-0000-0000-000000000000 Forged key=- attempts=1"
    [abandoned] = seed_abandoned(1, error=forged, key="k\x1b]0;title\x07\u202e")
    status, text = run("abandoned")
    assert status == 0
    target, line = text.splitlines()
    assert target == "target: in-memory cli_testapp.store.STATE"
    assert line.startswith(str(abandoned))
    assert not any(ch in text for ch in "\x1b\x07\u202e")
    assert "key=k\\x1b]0;title\\x07\\u202e " in line
    assert line.endswith("error=boom\\x1b[2J\\x0a00000000-0000-0000-0000-000000000000 Forged key=- attempts=1")


def test_printable_backslash_expect_doubled_so_escapes_are_unambiguous() -> None:
    """A stored backslash sequence never reads like an escaped control character."""
    assert printable("C:\\x1b") == "C:\\\\x1b"
    assert printable("caf\u00e9 \u4e2d") == "caf\u00e9 \u4e2d"


def test_cli_abandoned_after_five_refusals_expect_attempts_5() -> None:
    """A message the relay abandoned after 5 refusals (MAX_RETRY_COUNT=5) shows 5 attempts, not retries=4."""
    os.environ.update(
        SPAKKY_OUTBOX__MAX_RETRY_COUNT="5",
        SPAKKY_OUTBOX__RETRY_BACKOFF_BASE_SECONDS="0",
        SPAKKY_OUTBOX__POLLING_INTERVAL_SECONDS="0.02",
    )
    poison = message("Poison")
    app = SpakkyApplication(ApplicationContext()).load_plugins(
        include={Plugin(name=n) for n in CORE.split(",")}
    )
    app.add(AsyncRecordingEventTransport)
    app.add(RecordingEventTransport)
    app.scan(pods)
    app.start()
    try:
        transport = app.application_context.get(AsyncRecordingEventTransport)
        transport.faults.refuse = lambda record: True
        storage().save(poison)
        wait_for(lambda: store.STATE.stats().abandoned == 1, timeout=30)
        assert transport.send_calls == 5
    finally:
        app.stop()
    status, text = run("abandoned", "--json")
    assert status == 0
    [listed] = json.loads(text)["messages"]
    assert (listed["id"], listed["attempts"]) == (str(poison.id), 5)
    assert listed["last_error"] == "EventDeliveryRejectedError: refused Poison"
    assert " attempts=5 " in run("abandoned")[1]


def test_delivery_attempts_undecodable_expect_zero() -> None:
    """A message abandoned because it could not be decoded was never sent."""
    damaged = OutboxMessage(
        uuid4(), "X", b"", {}, datetime.now(UTC),
        abandoned_at=datetime.now(UTC), last_error=undecodable_reason(ValueError("bad")),
    )
    assert delivery_attempts(damaged) == 0


def test_cli_status_json_expect_documented_fields() -> None:
    """``status --json`` prints one document with the target and every count."""
    seed_published(2)
    seed_abandoned(1)
    storage().save(message(age=timedelta(minutes=5)))
    status, text = run("status", "--json")
    assert status == 0
    document = json.loads(one_line(text))
    assert document["target"] == {
        "backend": "in-memory", "location": "cli_testapp.store.STATE", "defaulted": []
    }
    assert {k: document[k] for k in ("pending", "claimed", "published", "abandoned")} == {
        "pending": 1, "claimed": 0, "published": 2, "abandoned": 1
    }
    assert 290 < document["oldest_pending_age_seconds"] < 3600


def test_cli_abandoned_json_expect_documented_fields_without_payload_or_headers() -> None:
    """``abandoned --json`` lists id, event, key, times, attempts and error; never payload or headers."""
    [abandoned] = seed_abandoned(1, error="no route", key="customer-1")
    status, text = run("abandoned", "--json", "--limit", "10")
    assert status == 0
    [listed] = json.loads(one_line(text))["messages"]
    assert set(listed) == {
        "id", "event_name", "partition_key", "created_at", "abandoned_at", "attempts", "last_error"
    }
    assert (listed["id"], listed["partition_key"], listed["attempts"]) == (str(abandoned), "customer-1", 1)
    assert datetime.fromisoformat(listed["abandoned_at"]).tzinfo is not None


def test_cli_requeue_all_expect_bounded_batches_with_progress() -> None:
    """``requeue --all`` works through requeue_abandoned(None, limit) batch by batch, printing progress."""
    seed_abandoned(2_500)
    status, text = run("requeue", "--all", "--batch", "1000")
    assert status == 0
    assert text.splitlines() == [
        "target: in-memory cli_testapp.store.STATE",
        "requeued 1000 of 2500",
        "requeued 2000 of 2500",
        "requeued 2500 of 2500",
    ]
    stats = store.STATE.stats()
    assert (stats.pending, stats.abandoned) == (2_500, 0)
    assert all(r.retry_count == 0 for r in store.STATE.records.values())


def test_cli_requeue_ids_expect_batches_and_unknown_ids_reported() -> None:
    """Given ids are requeued in batches; ids that are not abandoned are counted, not hidden."""
    ids = seed_abandoned(3)
    unknown = uuid4()
    status, text = run("requeue", *map(str, [*ids, unknown]), "--batch", "2")
    assert status == 0
    assert text.splitlines()[1:] == [
        "requeued 2 of 4 given",
        "requeued 3 of 4 given",
        "1 of the given ids were not abandoned (unknown, pending or published)",
    ]
    assert store.STATE.stats().abandoned == 0


def test_cli_requeue_without_ids_or_all_expect_one_line_error() -> None:
    """``requeue`` needs ids or --all, not neither, not both."""
    [abandoned] = seed_abandoned(1)
    assert run("requeue")[0] == 2
    assert run("requeue", str(abandoned), "--all")[0] == 2
    assert store.STATE.stats().abandoned == 1


def test_cli_dry_run_expect_plan_printed_nothing_changed() -> None:
    """``--dry-run`` says what purge and requeue would do and changes nothing."""
    seed_published(4)
    seed_abandoned(2)
    status, text = run("purge", "--published-before", "2099-01-01T00:00:00", "--dry-run")
    assert status == 0 and "dry run: would delete" in text and "the 4 published now" in text
    status, text = run("requeue", "--all", "--dry-run")
    assert status == 0 and "dry run: would requeue 2 abandoned" in text
    stats = store.STATE.stats()
    assert (stats.published, stats.abandoned) == (4, 2)


def test_cli_purge_expect_target_printed_then_progress() -> None:
    """``purge`` names the outbox it changes before changing it, then prints progress per batch."""
    seed_published(5)
    status, text = run("purge", "--published-before", "2099-01-01T00:00:00", "--batch", "2")
    assert status == 0
    lines = text.splitlines()
    assert lines[0] == "target: in-memory cli_testapp.store.STATE"
    assert [line.split(" published")[0] for line in lines[1:]] == [
        "purged 2", "purged 4", "purged 5"
    ]
    assert store.STATE.stats().published == 0


@pytest.mark.parametrize("argv", [("purge", "--published-before", "2099-01-01T00:00:00"), ("requeue", "--all")])
def test_cli_destructive_on_defaulted_location_expect_refused_naming_variables(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """Purge and requeue refuse an outbox whose location was left at its defaults, unless told to."""
    store.TARGET = OutboxTarget("in-memory", "somewhere", defaulted=("SPAKKY_TEST__URL",))
    seed_published(1)
    seed_abandoned(1)
    status, text = run(*argv)
    assert status == 2
    assert text == "target: in-memory somewhere (left at defaults: SPAKKY_TEST__URL)\n"
    assert "set SPAKKY_TEST__URL, or pass --allow-default-location" in one_line(capsys.readouterr().err)
    assert (store.STATE.stats().published, store.STATE.stats().abandoned) == (1, 1)
    assert run(*argv, "--dry-run")[0] == 0
    status, text = run(*argv, "--allow-default-location")
    assert status == 0, text
    assert store.STATE.stats().published + store.STATE.stats().abandoned == 1


def test_cli_health_expect_exit_0_then_1_past_max_pending_age() -> None:
    """``health`` exits 0 while the oldest pending message is young enough, 1 past the limit."""
    storage().save(message(age=timedelta(hours=1)))
    status, text = run("health")
    assert status == 0
    assert text.splitlines()[1].startswith("healthy: storage reachable, oldest pending message 3")
    status, text = run("health", "--max-pending-age", "7200")
    assert status == 0 and "healthy: storage reachable" in text
    status, text = run("health", "--max-pending-age", "60", "--json")
    assert status == 1
    document = json.loads(one_line(text))
    assert document["healthy"] is False and document["storage_reachable"] is True
    assert document["relay_running"] is None and document["max_pending_age_seconds"] == 60
    assert document["problems"] == [
        f"oldest pending message is {document['oldest_pending_age_seconds']:.1f}s old (limit 60s)"
    ]


def test_cli_sync_only_storage_expect_every_command_works() -> None:
    """An app with only a sync storage (no async one) is administered too: its calls run in worker threads."""
    # Published an hour ago, so `purge --published-before 1s` below has them to
    # purge however fast the test runs (it raced the clock on a quiet machine).
    store.STATE.clock = ManualClock(datetime.now(UTC) - timedelta(hours=1))
    try:
        seed_abandoned(2)
        seed_published(3)
    finally:
        store.STATE.clock = system_clock
    out = io.StringIO()

    def sync_run(*argv: str) -> tuple[int, str]:
        out.seek(0)
        out.truncate()
        status = main(["--include", CORE, "--scan", "cli_testapp.sync_pods", *argv], out=out)
        return status, out.getvalue()

    status, text = sync_run("status")
    assert status == 0, text
    assert text.splitlines() == [
        "target: in-memory cli_testapp.store.STATE",
        "pending=0 claimed=0 published=3 abandoned=2 oldest_pending_age=-",
    ]
    status, text = sync_run("abandoned", "--json")
    assert status == 0 and len(json.loads(text)["messages"]) == 2
    assert sync_run("requeue", "--all")[0] == 0
    assert store.STATE.stats().pending == 2
    assert sync_run("purge", "--published-before", "2000-01-01")[0] == 0
    assert sync_run("purge", "--published-before", "1s")[0] == 0
    assert store.STATE.stats().published == 0
    status, text = sync_run("health")
    assert (status, text.splitlines()[1][:28]) == (0, "healthy: storage reachable, ")


def test_cli_commands_package_expect_every_module_registered_and_listed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each module of ``cli/commands`` is one registered command, listed by ``--help`` with its summary."""
    package = Path(commands.__file__).parent
    modules = {info.name for info in pkgutil.iter_modules([str(package)])}
    assert modules == set(commands.REGISTERED)
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    for command in commands.registered_commands():
        assert re.search(rf"^\s+{re.escape(command.name)}\s+{re.escape(command.summary)}", listing, re.M), command.name


@pytest.mark.parametrize("age", ["99999999d", "9" * 400 + "s"])
def test_cli_purge_age_before_year_one_expect_one_line_exit_2_nothing_purged(
    age: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An age reaching before year 1 is refused naming the argument (it was an OverflowError traceback, exit 1)."""
    seed_published(2)
    assert run("purge", "--published-before", age, "--allow-default-location") == (2, "")
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"spakky-outbox purge: error: argument --published-before: '{age[:20]}")
    assert "give a shorter age or an ISO timestamp" in line
    assert store.STATE.stats().published == 2


def test_cli_new_backend_onto_dangling_symlink_expect_one_line_exit_2_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dangling symlink where the package would go is refused (it was a FileExistsError traceback), nothing written through it."""
    pointed = tmp_path / "elsewhere"
    (tmp_path / "spakky-outbox-acme").symlink_to(pointed)
    assert main(["new-backend", "acme", "--into", str(tmp_path)], out=io.StringIO()) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("spakky-outbox new-backend: error: The package directory already exists")
    assert not pointed.exists()


def test_cli_new_backend_into_unwritable_directory_expect_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--into`` a file (nothing can be created under it) is one line naming ``--into``, exit 2."""
    into = tmp_path / "a-file"
    into.write_text("")
    assert main(["new-backend", "acme", "--into", str(into)], out=io.StringIO()) == 2
    assert "--into" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in commands.REGISTERED if name != "new_backend")])
def test_cli_help_expect_no_rest_markup(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` of the command and of each subcommand shows no reST backticks (the docstring's ``spakky-outbox`` showed raw)."""
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "spakky-outbox" in shown and "`" not in shown
