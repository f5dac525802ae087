"""Rules of ``Capability.BYTE_BUDGET``: a claim's payloads stay within ``batch_max_bytes``."""

from spakky.outbox.common.message import OutboxMessage

from .support import *  # the rule-writing kit (support.__all__)


def _claimed(records: list[RawOutboxRecord]) -> list[RawOutboxRecord]:
    """Records under a claim that are still undelivered."""
    return [r for r in records if r.claimed and not r.published and not r.abandoned]


def _sized(key: str | None, name: str, size: int) -> OutboxMessage:
    return message(key, name=name, payload=b"x" * size)


async def _claim_under_budget(harness: AbstractOutboxHarness, sent: list[OutboxMessage]) -> list[list[str]]:
    """Write ``sent``, then claim and deliver until none is left, checking each claim's raw state.

    Returns:
        The messages each claim held, by label.
    """
    budget = harness.batch_max_bytes
    await harness.write(sent)
    position = {m.id: i for i, m in enumerate(sent)}
    storage = harness.new_storage()
    claims: list[list[str]] = []
    for _ in range(len(sent)):
        claimed = await storage.fetch_pending(100, MAX_RETRY)
        records = await harness.raw_records()
        held = sorted(_claimed(records), key=lambda r: position[r.id])
        claims.append(names(held))
        assert held, rule(
            "a claim over pending messages takes at least one, however large",
            f"an empty claim after claims {claims[:-1]}",
        )
        size = sum(len(r.payload) for r in held)
        assert size <= budget or len(held) == 1, rule(
            f"a claim holds at most batch_max_bytes ({budget}) of payload, "
            "except a single message larger than that, claimed alone",
            f"claims {claims}: the last holds {size} bytes",
        )
        done = {r.id for r in records if r.published} | {r.id for r in held}
        for record in held:
            if record.partition_key is None:
                continue
            ahead = sent[: position[record.id]]
            overtaken = [m for m in ahead if m.partition_key == record.partition_key and m.id not in done]
            assert not overtaken, rule(
                "a key whose next message does not fit waits: nothing behind it is claimed before it",
                f"claims {claims}: {record.event_name}@{record.partition_key} claimed "
                f"before {names(overtaken)} were delivered",
            )
        await acknowledge(storage, ids(claimed))
        if all(r.published for r in await harness.raw_records()):
            return claims
    raise AssertionError(
        rule(
            f"claims under a budget deliver every message ({names(sent)}) in at most one claim each",
            f"claims {claims} left some undelivered",
        )
    )


@capability(Capability.BYTE_BUDGET)
async def test_fetch_pending_byte_budget_expect_claims_within_budget_in_key_order(outbox_harness: AbstractOutboxHarness) -> None:
    """Each claim holds at most the byte budget (a lone larger message excepted), never nothing, keys in order."""
    budget = outbox_harness.batch_max_bytes
    part = budget * 3 // 10  # three fit in the budget, four do not
    await _claim_under_budget(
        outbox_harness,
        [
            _sized("a", "a1", part),
            _sized("a", "a2", part),
            _sized(None, "n1", part),
            _sized("d", "d1", part),
            _sized("d", "d2", 10),
            _sized("b", "huge", 2 * budget),
            _sized("a", "a3", part),
            _sized(None, "n2", part),
            _sized("b", "b2", part),
            _sized("a", "a4", part),
            _sized("c", "c1", 10),
            _sized(None, "n3", part),
        ],
    )


@capability(Capability.BYTE_BUDGET)
async def test_fetch_pending_byte_budget_keyless_backlog_expect_claims_within_budget(outbox_harness: AbstractOutboxHarness) -> None:
    """A keyless-only backlog is claimed within the byte budget too, a larger message alone."""
    budget = outbox_harness.batch_max_bytes
    part = budget * 3 // 10
    sent = [_sized(None, f"n{i}", part) for i in range(1, 5)]
    sent += [_sized(None, "huge", 2 * budget), _sized(None, "n5", part), _sized(None, "n6", 10)]
    claims = await _claim_under_budget(outbox_harness, sent)
    assert ["huge"] in claims, rule("a message larger than the budget is claimed alone", f"claims {claims}")
