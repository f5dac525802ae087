"""The conformance suite itself: it must fail storages that break the rules."""

import textwrap

import pytest

pytest_plugins = ["pytester"]

BROKEN_HARNESS = """
import pytest
from spakky.outbox.testing.memory import InMemoryOutboxHarness, InMemoryOutboxState

class Broken(InMemoryOutboxState):
{override}

class BrokenHarness(InMemoryOutboxHarness):
    name = "broken"
    def __init__(self):
        super().__init__()
        state = Broken()
        state.clock = self.clock
        self.state = state

@pytest.fixture
def outbox_harness():
    return BrokenHarness()
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
    def transaction(self, *, commit=True):
        return super().transaction(commit=True)
"""


def run_suite(pytester: pytest.Pytester, override: str, *, extra: str = "") -> pytest.RunResult:
    """Run the suite against the in-memory reference with ``override`` patched in."""
    body = textwrap.indent(textwrap.dedent(override).strip("\n"), "    ")
    pytester.makeconftest(BROKEN_HARNESS.replace("{override}", body))
    pytester.makepyfile(test_suite="from spakky.outbox.testing.conformance import *  # noqa\n" + extra)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    return pytester.runpytest_inprocess("-q", "-rf", "-p", "no:cacheprovider")


def failed_names(result: pytest.RunResult) -> set[str]:
    """Names of the suite tests that failed."""
    return {
        line.split("::")[1].split(" ")[0]
        for line in result.outlines
        if line.startswith("FAILED ") and "::" in line
    }


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
