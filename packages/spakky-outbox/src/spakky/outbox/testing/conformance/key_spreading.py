"""Rules of ``Capability.KEY_SPREADING``: a key-heavy backlog leaves keys for other instances."""


from .support import *  # the rule-writing kit (support.__all__)


@capability(Capability.KEY_SPREADING)
async def test_fetch_pending_deep_keys_expect_work_left_for_other_instances(outbox_harness: AbstractOutboxHarness) -> None:
    """With a backlog on every key, a claim takes runs of few keys, so a second instance finds work."""
    keys = [f"k{i}" for i in range(6)]
    for round_ in range(6):
        await outbox_harness.write([message(k) for k in keys], business_key=f"round-{round_}")
    first, second = outbox_harness.new_storage(), outbox_harness.new_storage()
    mine = await first.fetch_pending(6, MAX_RETRY)
    mine_keys = {m.partition_key for m in mine}
    assert len(mine) == 6 and len(mine_keys) <= 3, rule(
        "a claim of 6 over 6 keys with 6 messages each takes runs of at most 3 keys",
        f"claimed {names(mine)}",
    )
    theirs = await second.fetch_pending(6, MAX_RETRY)
    assert theirs and not mine_keys & {m.partition_key for m in theirs}, rule(
        "a second instance claiming right after finds other keys to relay",
        f"first claimed {names(mine)}, second claimed {names(theirs)}",
    )
