"""``spakky-outbox inbox status|purge`` on a real application over the in-memory inbox."""

import json
from datetime import timedelta

from cli_testapp import store
from test_cli import clean_outbox, run  # noqa: F401 - the autouse fixture resets the shared state


def _seed(count: int, old: int) -> None:
    """``count`` done records, the first ``old`` of them 30 days old, and one unfinished lease."""
    state = store.STATE
    for n in range(count):
        with state.transaction():
            state.record_inbox(("billing", f"m{n}"))
    for n in range(old):
        state.inbox[("billing", f"m{n}")].recorded_at -= timedelta(days=30)
    state.acquire_lease(("mailer", "m0"), 60)


def test_cli_inbox_status_expect_counts_and_oldest_age() -> None:
    """Status prints the inbox's location, its records, the unfinished leases and the oldest age; JSON too."""
    _seed(4, 1)
    status, text = run("inbox", "status")
    assert status == 0
    assert "inbox in-memory" in text and "records 5" in text and "leased 1" in text
    status, text = run("inbox", "status", "--json")
    shown = json.loads(text.strip().splitlines()[-1])
    assert (shown["records"], shown["leased"]) == (5, 1) and shown["oldest_age_seconds"] >= 29 * 86400


def test_cli_inbox_purge_default_window_expect_old_records_in_batches() -> None:
    """Purge without --before deletes records older than the 7-day window, in batches; dry run changes nothing."""
    _seed(6, 5)
    status, text = run("inbox", "purge", "--dry-run")
    assert status == 0 and "nothing changed" in text and len(store.STATE.inbox) == 7
    status, text = run("inbox", "purge", "--batch", "2", "--allow-default-location")
    assert status == 0
    assert [line.split()[1] for line in text.splitlines() if line.startswith("purged")] == ["2", "4", "5"]
    assert sorted(store.STATE.inbox) == [("billing", "m5"), ("mailer", "m0")]


def test_cli_inbox_purge_before_expect_cutoff_used() -> None:
    """--before 1h deletes every record older than an hour and keeps the rest."""
    _seed(3, 0)
    store.STATE.inbox[("billing", "m1")].recorded_at -= timedelta(hours=2)
    status, _ = run("inbox", "purge", "--before", "1h", "--allow-default-location")
    assert status == 0 and ("billing", "m1") not in store.STATE.inbox and len(store.STATE.inbox) == 3

