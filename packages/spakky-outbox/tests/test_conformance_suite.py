"""The conformance suite itself: it must fail storages that break the rules."""

import pytest
from rules_sandbox import broken_state, failed_names, indented, run_rules

pytest_plugins = ["pytester"]

BROKEN_HARNESS = """
import pytest
from spakky.outbox.testing.harness import Capability
from spakky.outbox.testing.memory import InMemoryOutboxHarness

@pytest.fixture
def outbox_harness():
    return BrokenHarness()

class BrokenHarness(InMemoryOutboxHarness):
    name = "broken"
    def __init__(self):
        super().__init__()
        state = Broken()
        state.clock = self.clock
        self.state = state
"""

NO_FENCING = """
    def _owned(self, owner, message_id):
        record = self.records.get(message_id)
        return record if record is not None and record.pending else None
"""

NO_KEY_ORDER = """
    def claim(self, owner, limit, max_retry):
        with self._lock:
            now = self.clock()
            out = []
            for record in self.records.values():
                if len(out) < limit and record.pending and self._eligible(record, now, max_retry):
                    record.claimed_by, record.claimed_at = owner, now
                    out.append(record.view())
            return out
"""

NO_ROLLBACK = """
    def rollback(self):
        self.commit()
"""


def run_suite(
    pytester: pytest.Pytester, override: str, *, extra: str = "", harness: str = ""
) -> pytest.RunResult:
    """Run the suite against the in-memory reference with ``override`` patched in.

    ``override`` goes into the state class, ``harness`` into the harness class.
    """
    conftest = broken_state(override) + BROKEN_HARNESS + (indented(harness) if harness else "")
    return run_rules(pytester, conftest, "spakky.outbox.testing.conformance", extra=extra)


def test_suite_storage_without_fencing_expect_fencing_tests_fail(pytester: pytest.Pytester) -> None:
    """A storage that lets any instance acknowledge any claim fails the fencing tests."""
    result = run_suite(pytester, NO_FENCING)
    assert {
        "test_mark_published_by_expired_owner_expect_new_owner_state_kept",
        "test_mark_published_many_after_takeover_expect_fenced",
        "test_release_by_other_instance_expect_claim_kept",
    } <= failed_names(result)
    assert any("broken: NOT CONFORMANT" in line for line in result.outlines)


def test_suite_storage_without_key_order_expect_ordering_tests_fail(pytester: pytest.Pytester) -> None:
    """A storage that ignores partition keys fails the partition-ordering tests."""
    result = run_suite(pytester, NO_KEY_ORDER)
    assert {
        "test_fetch_pending_key_head_claimed_elsewhere_expect_key_withheld",
        "test_fetch_pending_concurrent_keyed_expect_one_holder_per_key",
    } <= failed_names(result)


def test_suite_storage_committing_on_rollback_expect_transaction_test_fails(pytester: pytest.Pytester) -> None:
    """A storage whose rollback keeps the writes fails the transactional-save test."""
    result = run_suite(pytester, NO_ROLLBACK)
    assert "test_save_rollback_expect_neither_business_record_nor_message" in failed_names(result)


def test_suite_shadowed_test_expect_run_fails(pytester: pytest.Pytester) -> None:
    """Redefining a suite test without an xfail reason fails the run."""
    result = run_suite(
        pytester,
        "    pass",
        extra="\nasync def test_fetch_pending_empty_expect_empty_list(outbox_harness):\n    pass\n",
    )
    assert failed_names(result) == {"test_conformance_suite_complete_expect_no_shadowed_tests"}


IGNORES_MAX_RETRY = """
    def _eligible(self, record, now, max_retry):
        return super()._eligible(record, now, max_retry=10**9)
"""

SPENT_HEAD_DOES_NOT_BLOCK = """
    def claim(self, owner, limit, max_retry):
        spent = [r for r in self.records.values() if r.pending and r.retry_count >= max_retry]
        for record in spent:
            record.published_at = self.clock()
        try:
            return super().claim(owner, limit, max_retry)
        finally:
            for record in spent:
                record.published_at = None
"""

REQUEUE_KEEPS_BUDGET = """
    def requeue_abandoned(self, ids, limit):
        kept = {r.message.id: r.retry_count for r in self.records.values()}
        count = super().requeue_abandoned(ids, limit)
        for r in self.records.values():
            r.retry_count = kept[r.message.id]
        return count
"""

STATS_COUNT_EXPIRED_CLAIMS = """
    def stats(self):
        from dataclasses import replace
        counted = super().stats()
        claimed = sum(1 for r in self.records.values() if r.pending and r.claimed_by is not None)
        return replace(counted, claimed=claimed)
"""

CREATED_AT_NOT_STORED = """
    def _apply(self, messages, business):
        from dataclasses import replace
        from datetime import UTC, datetime
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        super()._apply([replace(m, created_at=epoch) for m in messages], business)
"""

RENEWAL_OUTLIVES_TIMEOUT = """
    def renew(self, owner, ids):
        renewed = 0
        for message_id in ids:
            record = self._owned(owner, message_id)
            if record is not None:
                record.claimed_at = self.clock()
                record.lease_until = self.clock() + self.claim_lease
                renewed += 1
        return renewed
"""

RENEWAL_IGNORES_OWNER = """
    def renew(self, owner, ids):
        renewed = 0
        for message_id in ids:
            record = self.records.get(message_id)
            if record is not None and record.claimed_at is not None:
                record.lease_until = self.clock() + self.claim_lease
                renewed += 1
        return renewed
"""

HEAD_OF_EVERY_KEY = """
    def claim(self, owner, limit, max_retry):
        import spakky.outbox.testing.memory_state as memory
        original = memory.key_run
        memory.key_run = lambda limit: 1
        try:
            return super().claim(owner, limit, max_retry)
        finally:
            memory.key_run = original
"""

REQUEUE_IGNORES_LIMIT = """
    def requeue_abandoned(self, ids, limit):
        return super().requeue_abandoned(ids, 10**9)
"""

PURGE_ON_CALLER_CLOCK = """
    def purge_published(self, before, limit):
        # The cutoff taken on the caller's clock, which runs two hours ahead.
        from datetime import UTC, datetime, timedelta
        if isinstance(before, timedelta):
            before = datetime.now(UTC) + timedelta(hours=2) - before
        return super().purge_published(before, limit)
"""

ACK_COUNTS_WHAT_IT_WAS_GIVEN = """
    def publish(self, owner, ids):
        super().publish(owner, ids)
        return len(ids)
"""

IGNORES_BYTE_BUDGET = """
    def claim(self, owner, limit, max_retry):
        self.batch_max_bytes = 10**12
        return super().claim(owner, limit, max_retry)
"""

BUDGET_SKIPS_WHAT_DOES_NOT_FIT = """
    def claim(self, owner, limit, max_retry):
        import spakky.outbox.testing.memory_state as memory
        original = memory.within_bytes

        def greedy(chosen, size, budget):
            kept, total = [], 0
            for item in chosen:
                if not kept or total + size(item) <= budget:
                    kept.append(item)
                    total += size(item)
            return kept

        memory.within_bytes = greedy
        try:
            return super().claim(owner, limit, max_retry)
        finally:
            memory.within_bytes = original
"""

DETAIL_AS_LISTED = """
    def get_message(self, message_id):
        from dataclasses import replace
        detail = super().get_message(message_id)
        return None if detail is None else replace(detail, message=replace(detail.message, payload=b"", headers={}))
"""

DETAIL_ONLY_UNDELIVERED = """
    def get_message(self, message_id):
        record = self.records.get(message_id)
        return super().get_message(message_id) if record is not None and record.pending else None
"""

RELAYS_AS_ONE = """
    def relay_claims(self):
        from spakky.outbox.common.stats import RelayClaims
        relays = super().relay_claims()
        if not relays:
            return relays
        return [RelayClaims("relay", sum(r.held for r in relays), max(r.until for r in relays))]
"""

LEAKY = """
    async def assert_no_leaks(self):
        raise AssertionError("1 connection still checked out")
"""

BASE_ONLY = """
    capabilities = frozenset({Capability.ASYNC_API})
"""


@pytest.mark.parametrize(
    ("broken", "expected_failure", "rule_text"),
    [
        (IGNORES_MAX_RETRY, "test_fetch_pending_budget_spent_expect_never_returned", "reached max_retry"),
        (SPENT_HEAD_DOES_NOT_BLOCK, "test_fetch_pending_spent_key_head_expect_followers_held", "never overtake"),
        (REQUEUE_KEEPS_BUDGET, "test_requeue_abandoned_expect_pending_with_fresh_budget", "fresh retry budget"),
        (STATS_COUNT_EXPIRED_CLAIMS, "test_stats_expired_claim_expect_not_counted_claimed", "only live claims count"),
        (CREATED_AT_NOT_STORED, "test_save_created_at_expect_stored_and_returned", "created_at is stored as given"),
        (RENEWAL_OUTLIVES_TIMEOUT, "test_renew_claims_expect_never_past_claim_timeout", "renewed without end"),
        (RENEWAL_IGNORES_OWNER, "test_renew_claims_after_takeover_expect_fenced", "fencing"),
        (HEAD_OF_EVERY_KEY, "test_fetch_pending_deep_keys_expect_work_left_for_other_instances", "runs of at most 3 keys"),
        (REQUEUE_IGNORES_LIMIT, "test_requeue_abandoned_limit_expect_bounded_batches", "at most 2 per call"),
        (PURGE_ON_CALLER_CLOCK, "test_purge_published_age_expect_cutoff_on_storage_clock", "storage's clock"),
        (ACK_COUNTS_WHAT_IT_WAS_GIVEN, "test_mark_published_many_after_takeover_expect_fenced", "settled nothing"),
        (
            IGNORES_BYTE_BUDGET,
            "test_fetch_pending_byte_budget_expect_claims_within_budget_in_key_order",
            "at most batch_max_bytes (65536) of payload",
        ),
        (
            BUDGET_SKIPS_WHAT_DOES_NOT_FIT,
            "test_fetch_pending_byte_budget_expect_claims_within_budget_in_key_order",
            "nothing behind it is claimed before it",
        ),
        (
            DETAIL_AS_LISTED,
            "test_get_message_expect_stored_fields_and_what_holds_it",
            "payload and headers included",
        ),
        (
            DETAIL_ONLY_UNDELIVERED,
            "test_get_message_expect_stored_fields_and_what_holds_it",
            "finds every stored message, in any state",
        ),
        (RELAYS_AS_ONE, "test_relay_claims_expect_live_claims_by_relay", "one entry per relay instance"),
    ],
    ids=[
        "ignores-max-retry", "spent-head-overtaken", "requeue-keeps-budget", "stats-count-expired",
        "created-at-lost", "renewal-outlives-timeout", "renewal-ignores-owner", "head-of-every-key",
        "requeue-unbounded", "purge-on-caller-clock", "ack-counts-what-it-was-given",
        "ignores-byte-budget", "budget-skips-what-does-not-fit", "detail-as-listed", "detail-only-undelivered", "relays-as-one",
    ],
)
def test_suite_broken_rule_expect_named_test_fails_saying_rule(
    pytester: pytest.Pytester, broken: str, expected_failure: str, rule_text: str
) -> None:
    """A storage broken in exactly one way fails the test of that rule, and the failure names it."""
    result = run_suite(pytester, broken)
    assert expected_failure in failed_names(result)
    assert rule_text in result.stdout.str()
    assert any("broken: NOT CONFORMANT" in line or "broken: BASE" in line for line in result.outlines)
    assert not any("broken: FULL" in line for line in result.outlines)


def test_suite_leaking_harness_expect_summary_names_leaks(pytester: pytest.Pytester) -> None:
    """Leak-check failures are reported as leaks in the summary, not as failing capabilities."""
    result = run_suite(pytester, "pass", harness=LEAKY)
    summary = next(line for line in result.outlines if line.startswith("broken: "))
    assert "LEAKS (a connection or session left open after the test)" in summary
    assert "1 connection still checked out" in result.stdout.str()
    assert "FULL" not in summary


def test_suite_base_only_storage_expect_summary_says_no_key_order(pytester: pytest.Pytester) -> None:
    """A storage declaring only the base level passes BASE and the summary says keys are not ordered."""
    result = run_suite(pytester, "pass", harness=BASE_ONLY)
    summary = next(line for line in result.outlines if line.startswith("broken: "))
    assert summary.startswith("broken: BASE")
    assert "no partition ordering" in summary
