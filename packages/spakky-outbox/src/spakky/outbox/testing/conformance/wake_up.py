"""Rules of ``Capability.WAKE_UP``: a commit wakes a waiting relay, none is lost."""

import asyncio

from spakky.outbox.ports.storage import (
    IAsyncOutboxWakeUp,
)

from .support import *  # the rule-writing kit (support.__all__)


@capability(Capability.WAKE_UP)
async def test_wait_for_messages_commit_expect_early_wake(outbox_harness: AbstractOutboxHarness) -> None:
    """A waiting instance wakes soon after another commits a message."""
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxWakeUp)
    waiter = asyncio.ensure_future(storage.wait_for_messages(30.0))
    await asyncio.sleep(0)  # let the waiter subscribe before the commit
    loop = asyncio.get_running_loop()
    started = loop.time()
    await outbox_harness.write([message()])
    while not waiter.done() and loop.time() - started < 10.0:
        await asyncio.wait({waiter}, timeout=0.05)
        if not waiter.done():
            await outbox_harness.write([message()])
    if not waiter.done():
        waiter.cancel()
        raise AssertionError(rule("a commit wakes a waiting instance", "still waiting 10s after commits"))
    assert waiter.result() is True, rule("a wake-up by a commit reports True", waiter.result())


@capability(Capability.WAKE_UP)
async def test_wait_for_messages_commit_after_empty_claim_expect_no_lost_wake(outbox_harness: AbstractOutboxHarness) -> None:
    """A commit between an empty claim and the following wait still wakes the waiter."""
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxWakeUp)
    assert await storage.fetch_pending(10, MAX_RETRY) == [], rule("an empty outbox yields an empty claim", "a claim")
    await outbox_harness.write([message()])
    loop = asyncio.get_running_loop()
    started = loop.time()
    woke = await storage.wait_for_messages(10.0)
    took = loop.time() - started
    assert woke is True and took < 5.0, rule(
        "a commit made after an empty claim and before the wait is not lost",
        f"woke={woke} after {took:.1f}s",
    )


@capability(Capability.WAKE_UP)
async def test_wait_for_messages_idle_expect_timeout(outbox_harness: AbstractOutboxHarness) -> None:
    """With nothing committed, the wait ends at its timeout and reports no wake-up."""
    storage = outbox_harness.new_storage()
    assert isinstance(storage, IAsyncOutboxWakeUp)
    woke = await storage.wait_for_messages(0.2)
    assert woke is False, rule("with nothing committed the wait times out reporting False", woke)
