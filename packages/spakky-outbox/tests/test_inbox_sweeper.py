"""The inbox sweeper: its setting, an outage it outlives, stores that expire records themselves."""

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import override

import pytest
from memory_app import build_app
from spakky.outbox.error import InvalidOutboxConfigError
from spakky.outbox.inbox.config import InboxConfig
from spakky.outbox.inbox.sweeper import AsyncInboxSweeperBackgroundService
from spakky.outbox.testing.async_memory_inbox import AsyncInMemoryInboxStorage
from spakky.outbox.testing.memory_state import InboxEntry, InMemoryOutboxState

INTERVAL_VARIABLE = "SPAKKY_OUTBOX__INBOX__SWEEP_INTERVAL_SECONDS"


class FlakyInbox(AsyncInMemoryInboxStorage):
    """The in-memory inbox whose first ``failures`` purges fail as an unreachable database does."""

    def __init__(self, failures: int) -> None:
        self.state = InMemoryOutboxState()
        super().__init__(self.state)
        self.failures = failures
        self.purges = 0

    @override
    async def purge(self, before: datetime, limit: int = 10_000) -> int:
        self.purges += 1
        if self.purges <= self.failures:
            raise ConnectionRefusedError("database unreachable")
        return await super().purge(before, limit)

    def write(self, message_ids: list[str], recorded_at: datetime) -> None:
        """Backdoor: done records written at ``recorded_at``."""
        for message_id in message_ids:
            self.state.inbox["billing", message_id] = InboxEntry(recorded_at=recorded_at)

    def message_ids(self) -> list[str]:
        """Every record's message id, sorted."""
        return sorted(message_id for _, message_id in self.state.inbox)


class ExpiringInbox(FlakyInbox):
    """A store with TTLs (as Redis or MongoDB): its records expire by themselves, a purge is never needed."""

    @property
    @override
    def expires_by_itself(self) -> bool:
        return True


async def _wait(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Wait on the event loop until ``condition()`` holds; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("value", ["-1", "abc", "inf", "nan"])
def test_inbox_config_sweep_interval_bad_value_expect_error_naming_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A negative, non-numeric or infinite interval fails with our error naming the variable."""
    monkeypatch.setenv(INTERVAL_VARIABLE, value)
    with pytest.raises(InvalidOutboxConfigError) as raised:
        InboxConfig()
    assert f"{INTERVAL_VARIABLE}={value!r}" in str(raised.value)


def test_inbox_config_sweep_interval_zero_expect_no_sweeper(monkeypatch: pytest.MonkeyPatch) -> None:
    """0 registers no sweeper; the default (300 s) does."""
    assert InboxConfig().sweep_interval_seconds == 300.0
    assert build_app().application_context.contains(AsyncInboxSweeperBackgroundService)
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    assert not build_app().application_context.contains(AsyncInboxSweeperBackgroundService)


async def test_inbox_sweeper_storage_outage_expect_warnings_then_swept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two failing sweeps log warnings and the service goes on; the third removes what expired."""
    monkeypatch.setenv(INTERVAL_VARIABLE, "0.01")
    monkeypatch.setenv("SPAKKY_OUTBOX__INBOX__SWEEP_BATCH", "2")
    caplog.set_level(logging.INFO, logger="spakky.outbox.inbox.sweeper")
    inbox = FlakyInbox(failures=2)
    inbox.write(["old-0", "old-1", "old-2"], datetime.now(UTC) - timedelta(days=8))
    inbox.write(["new-0"], datetime.now(UTC))
    sweeper = AsyncInboxSweeperBackgroundService(InboxConfig(), inbox)
    sweeper.set_stop_event(asyncio.Event())
    await sweeper.start_async()
    try:
        await _wait(lambda: "Inbox sweep removed 3 records past the window" in caplog.messages)
    finally:
        await sweeper.stop_async()
    assert inbox.message_ids() == ["new-0"]
    assert caplog.messages.count("Inbox sweep failed; retrying in 0.01s") == 2
    assert caplog.messages[-1] == "Inbox sweeper stopped"


async def test_inbox_sweeper_store_expiring_by_itself_expect_no_purge() -> None:
    """On a store with TTLs the service ends at once without a purge."""
    inbox = ExpiringInbox(failures=0)
    sweeper = AsyncInboxSweeperBackgroundService(InboxConfig(), inbox)
    sweeper.set_stop_event(asyncio.Event())
    await asyncio.wait_for(sweeper.run_async(), timeout=10)
    assert inbox.purges == 0
