"""Tests of the in-process wake-up hub, the NOTIFY throttle and the commit hook."""

import asyncio
import threading
from pathlib import Path

from spakky.outbox.backend.wakeup import WakeUpHub, wake_up_hub
from spakky.plugins.outbox_sqlalchemy.wakeup import (
    NotifyThrottle,
    notify_channel,
    run_after_commit,
    signal_after_commit,
)
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session


def test_wake_up_hub_sync_wait_signalled_from_thread_expect_true() -> None:
    """A blocked sync waiter returns True when another thread signals."""
    hub = WakeUpHub()
    seen = hub.generation
    timer = threading.Timer(0.05, hub.signal)
    timer.start()
    assert hub.wait(seen, 10.0) is True
    timer.join()


def test_wake_up_hub_sync_wait_idle_expect_false() -> None:
    """Without a signal the sync wait ends at its timeout with False."""
    hub = WakeUpHub()
    assert hub.wait(hub.generation, 0.05) is False


async def test_wake_up_hub_async_wait_signalled_from_thread_expect_true() -> None:
    """An async waiter is woken by a signal from another thread."""
    hub = WakeUpHub()
    seen = hub.generation
    waiter = asyncio.ensure_future(hub.wait_async(seen, 10.0))
    await asyncio.sleep(0)
    await asyncio.to_thread(hub.signal)
    assert await waiter is True


async def test_wake_up_hub_async_wait_missed_signal_expect_immediate_true() -> None:
    """A signal given before the wait started is not lost."""
    hub = WakeUpHub()
    seen = hub.generation
    hub.signal()
    assert await hub.wait_async(seen, 10.0) is True


async def test_wake_up_hub_async_wait_idle_expect_false() -> None:
    """Without a signal the async wait ends at its timeout with False."""
    hub = WakeUpHub()
    assert await hub.wait_async(hub.generation, 0.05) is False


def test_wake_up_hub_per_table_expect_same_hub_per_name() -> None:
    """One hub per table name in a process."""
    assert wake_up_hub("t_one") is wake_up_hub("t_one")
    assert wake_up_hub("t_one") is not wake_up_hub("t_two")


def test_notify_throttle_remaining_expect_rest_of_window() -> None:
    """After a NOTIFY the window's rest is owed; unknown channels may notify now."""
    throttle = NotifyThrottle()
    assert throttle.remaining("a", 60.0) == 0.0
    throttle.record("a")
    assert 59.0 < throttle.remaining("a", 60.0) <= 60.0
    assert throttle.remaining("a", 0.0) == 0.0
    assert throttle.remaining("b", 60.0) == 0.0


def test_run_after_commit_same_key_expect_callback_once(tmp_path: Path) -> None:
    """Callbacks run once per key after commit, none after rollback."""
    engine = create_engine(f"sqlite:///{tmp_path}/callbacks.db")
    calls: list[str] = []
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        run_after_commit(session, "k", lambda: calls.append("rolled back"))
        session.rollback()
        session.execute(text("SELECT 1"))
        run_after_commit(session, "k", lambda: calls.append("first"))
        run_after_commit(session, "k", lambda: calls.append("second"))
        session.commit()
    engine.dispose()
    assert calls == ["first"]


def test_notify_channel_long_table_expect_63_characters() -> None:
    """Channel names respect PostgreSQL's identifier length."""
    assert notify_channel("orders") == "spakky_outbox_orders"
    assert len(notify_channel("x" * 63)) == 63


def test_signal_after_commit_expect_signal_on_commit_only(tmp_path: Path) -> None:
    """The hub is signalled once the session commits, never after a rollback."""
    engine = create_engine(f"sqlite:///{tmp_path}/hook.db")
    hub = WakeUpHub()
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        signal_after_commit(session, hub)
        session.rollback()
        assert hub.generation == 0
        session.execute(text("SELECT 1"))
        signal_after_commit(session, hub)
        signal_after_commit(session, hub)
        session.commit()
        assert hub.generation == 1
        session.execute(text("SELECT 1"))
        session.commit()
        assert hub.generation == 1
    engine.dispose()
