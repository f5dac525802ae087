"""The inbox rules on the in-memory reference, and broken references that must fail them."""

import pytest
from rules_sandbox import broken_state, failed_names, run_rules

pytest_plugins = ["pytester"]

INBOX_RULES = "spakky.outbox.testing.inbox_conformance"

BROKEN = """
import pytest
from spakky.outbox.testing.inbox_harness import InMemoryInboxHarness

@pytest.fixture
def inbox_harness():
    harness = InMemoryInboxHarness()
    harness.state = Broken()
    return harness
"""

GOOD = """
import pytest
from spakky.outbox.testing.inbox_harness import InMemoryInboxHarness

@pytest.fixture
def inbox_harness():
    return InMemoryInboxHarness()
"""

FORGETS_COMMITTED = """
    def record_inbox(self, key):
        pending = self._transaction.get()
        pending.inbox.add(key)
        return True
    def _apply_inbox(self, inbox):
        for key in inbox:
            self.inbox[key] = InboxEntry(recorded_at=self.clock())
"""

ROLLBACK_KEEPS_RECORD = """
    def rollback(self):
        pending = self._transaction.get()
        if pending is not None:
            self._apply_inbox(pending.inbox)
        super().rollback()
"""

NO_COMMIT_CHECK = """
    def _apply_inbox(self, inbox):
        for key in inbox:
            self.inbox[key] = InboxEntry(recorded_at=self.clock())
"""

CONSUMERS_CONFLATED = """
    def record_inbox(self, key):
        if any(m == key[1] for _, m in self.inbox):
            return False
        return super().record_inbox(key)
"""

SWEEP_UNBOUNDED = """
    def purge_inbox(self, before, limit):
        return super().purge_inbox(before, 10**9)
"""

SWEEP_EVERYTHING = """
    def purge_inbox(self, before, limit):
        from datetime import timedelta
        return super().purge_inbox(before + timedelta(days=365), limit)
"""

LEASE_NEVER_LAPSES = """
    def acquire_lease(self, key, lease_seconds):
        from spakky.outbox.ports.inbox import InboxLease, LeaseOutcome
        entry = self.inbox.get(key)
        if entry is not None and entry.lease_until is not None:
            return InboxLease(LeaseOutcome.BUSY)
        return super().acquire_lease(key, lease_seconds)
"""

FINISH_UNFENCED = """
    def finish_lease(self, key, token):
        entry = self.inbox.get(key)
        return super().finish_lease(key, entry.lease_owner if entry else token)
"""

FINISH_FORGETS = """
    def finish_lease(self, key, token):
        self.release_lease(key, token)
        return True
"""

OUTSIDE_TX_STORED = """
    def record_inbox(self, key):
        if self._transaction.get() is None:
            self.inbox[key] = InboxEntry(recorded_at=self.clock())
            return True
        return super().record_inbox(key)
"""


def test_inbox_rules_in_memory_reference_expect_all_pass(pytester: pytest.Pytester) -> None:
    """The in-memory reference inbox passes every inbox rule."""
    result = run_rules(pytester, GOOD, INBOX_RULES)
    result.assert_outcomes(passed=8)


@pytest.mark.parametrize(
    ("broken", "expected", "rule_text"),
    [
        (FORGETS_COMMITTED, "test_inbox_duplicate_within_window_expect_skipped", "duplicate within the window must be skipped"),
        (ROLLBACK_KEEPS_RECORD, "test_inbox_rolled_back_handler_expect_no_record_and_rerun", "must leave no record"),
        (NO_COMMIT_CHECK, "test_inbox_racing_instances_expect_effect_once", "racing on one message must run it once"),
        (CONSUMERS_CONFLATED, "test_inbox_consumer_names_expect_independent", "must be independent"),
        (SWEEP_UNBOUNDED, "test_inbox_sweep_outside_window_expect_removed_in_bounded_batches", "at most 2 per call"),
        (SWEEP_EVERYTHING, "test_inbox_sweep_outside_window_expect_removed_in_bounded_batches", "inside the window must stay"),
        (LEASE_NEVER_LAPSES, "test_inbox_lease_crashed_holder_expect_rerun_after_lease_fenced", "must lapse"),
        (FINISH_UNFENCED, "test_inbox_lease_crashed_holder_expect_rerun_after_lease_fenced", "fenced off"),
        (FINISH_FORGETS, "test_inbox_lease_finished_expect_never_rerun", "finished record holds no lease"),
        (OUTSIDE_TX_STORED, "test_inbox_record_outside_transaction_expect_transaction_required", "DID NOT RAISE"),
    ],
    ids=[
        "forgets-committed", "rollback-keeps-record", "no-commit-check", "consumers-conflated", "sweep-unbounded",
        "sweep-everything", "lease-never-lapses", "finish-unfenced", "finish-forgets", "outside-tx-stored",
    ],
)
def test_inbox_rules_broken_reference_expect_named_rule_fails(
    pytester: pytest.Pytester, broken: str, expected: str, rule_text: str
) -> None:
    """An inbox broken in one way fails the rule for it, and the failure says which rule."""
    result = run_rules(pytester, broken_state(broken) + BROKEN, INBOX_RULES)
    assert expected in failed_names(result)
    assert rule_text in result.stdout.str()
