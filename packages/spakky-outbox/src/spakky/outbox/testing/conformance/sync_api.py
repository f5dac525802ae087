"""Rules of ``Capability.SYNC_API`` and of the declared capability interfaces."""

import asyncio

from spakky.outbox.testing.harness import CAPABILITY_PORTS

from .support import *  # the rule-writing kit (support.__all__)


@capability(Capability.SYNC_API)
async def test_sync_save_commit_and_rollback_expect_atomic(outbox_harness: AbstractOutboxHarness) -> None:
    """The sync port joins the sync transaction: commit stores, rollback discards."""
    kept, dropped = message(name="kept"), message(name="dropped")
    await asyncio.to_thread(outbox_harness.write_sync, [kept], business_key="kept")
    await asyncio.to_thread(outbox_harness.write_sync, [dropped], commit=False, business_key="dropped")
    business = (
        await outbox_harness.business_record_exists("kept"),
        await outbox_harness.business_record_exists("dropped"),
    )
    assert business == (True, False), rule("sync commit keeps, sync rollback discards business records", business)
    stored = await outbox_harness.raw_records()
    assert [r.id for r in stored] == [kept.id], rule("sync commit stores, sync rollback discards messages", names(stored))


@capability(Capability.SYNC_API)
async def test_sync_claim_and_acknowledge_expect_exclusive_and_fenced(outbox_harness: AbstractOutboxHarness) -> None:
    """Sync instances claim exclusively and acknowledge only what they hold."""
    first_message, second_message = message(name="first"), message("a", name="second")
    await asyncio.to_thread(outbox_harness.write_sync, [first_message, second_message])
    first, second = outbox_harness.new_sync_storage(), outbox_harness.new_sync_storage()
    claimed = await asyncio.to_thread(first.fetch_pending, 10, MAX_RETRY)
    assert ids(claimed) == [first_message.id, second_message.id], rule("sync claims oldest first", names(claimed))
    theirs = await asyncio.to_thread(second.fetch_pending, 10, MAX_RETRY)
    assert theirs == [], rule("a live sync claim hides messages from other instances", names(theirs))
    await asyncio.to_thread(second.mark_published, first_message.id)
    await asyncio.to_thread(first.mark_published, second_message.id)
    await asyncio.to_thread(first.increment_retry, first_message.id)
    raw = await raw_by_id(outbox_harness)
    state = (raw[first_message.id].published, raw[first_message.id].retry_count, raw[second_message.id].published)
    assert state == (False, 1, True), rule(
        "sync acknowledgements are fenced by the claim's owner",
        f"first published / retries, second published = {state}",
    )
    await asyncio.to_thread(first.mark_abandoned, first_message.id)
    assert (await raw_by_id(outbox_harness))[first_message.id].abandoned, rule(
        "sync mark_abandoned abandons", "not abandoned"
    )


@capability(Capability.SYNC_API)
async def test_sync_storage_capabilities_expect_declared_interfaces(outbox_harness: AbstractOutboxHarness) -> None:
    """The sync storage implements the sync mirror of every declared capability."""
    storage = outbox_harness.new_sync_storage()
    missing = [
        str(c) for c, ports in CAPABILITY_PORTS.items()
        if c in outbox_harness.capabilities and not isinstance(storage, ports.sync_port)
    ]
    assert missing == [], rule("the sync storage implements every declared capability", f"missing {missing}")


async def test_async_storage_capabilities_expect_declared_interfaces(outbox_harness: AbstractOutboxHarness) -> None:
    """The async storage implements every capability interface it declares."""
    storage = outbox_harness.new_storage()
    missing = [
        str(c) for c, ports in CAPABILITY_PORTS.items()
        if c in outbox_harness.capabilities and not isinstance(storage, ports.async_port)
    ]
    assert missing == [], rule("the async storage implements every declared capability", f"missing {missing}")
