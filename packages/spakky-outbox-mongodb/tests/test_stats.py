"""`stats` on raw state: exact counts and oldest pending age within the cap, a bounded read past it."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import OutboxStats
from spakky.plugins.outbox_mongodb.documents import KEYED_PENDING
from spakky.plugins.outbox_mongodb.operations import (
    Aggregate,
    Operation,
    OutboxQueries,
    Plan,
    run_plan,
    run_plan_async,
)
from spakky.plugins.outbox_mongodb.transaction import AsyncMongoTransaction

from .conftest import MongoOutbox

BASE = datetime(2030, 1, 1, tzinfo=UTC)
"""Save times start here; ages are hours apart, so the oldest head is unambiguous."""


def _at(hours_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours_ago)


async def _put(outbox: MongoOutbox, rows: list[tuple[str | None, float, str]]) -> list[UUID]:
    """Save one message per ``(key, created hours ago, state)`` in list order, then set its raw fields."""
    messages = [
        OutboxMessage(uuid4(), "OrderPlaced", b"{}", {}, datetime.now(UTC), partition_key=key) for key, _, _ in rows
    ]
    storage = outbox.storage()
    async with AsyncMongoTransaction(outbox.config, outbox.connections):
        for message in messages:
            await storage.save(message)
    for order, (message, (_, hours, state)) in enumerate(zip(messages, rows, strict=True)):
        fields: dict[str, Any] = {"created_at": _at(hours), "saved_at": BASE + timedelta(seconds=order)}
        if state == "claimed":
            fields |= {"claimed_by": "other", "claimed_at": datetime.now(UTC), "available_at": _at(-1)}
        elif state != "pending":
            fields["state"] = state
        await outbox.raw.update_one({"_id": message.id}, {"$set": fields})
    return [message.id for message in messages]


STATE: list[tuple[str | None, float, str]] = [
    ("k0", 100, "published"),  # the oldest message, delivered: not pending
    ("k0", 8, "pending"),  # k0's head now
    ("k0", 7.5, "pending"),
    ("k1", 10, "claimed"),  # the oldest pending head, held by a live claim
    ("k1", 9, "pending"),
    ("k1", 8.5, "pending"),
    ("k2", 7, "pending"),
    ("k3", 300, "abandoned"),  # given up on: not pending, does not block k3
    ("k3", 3, "pending"),
    (None, 200, "abandoned"),
    (None, 50, "published"),
    (None, 5, "pending"),  # the keyless head
    (None, 4, "claimed"),
]


async def _run(outbox: MongoOutbox, cap: int, flavour: str, seen: list[Operation] | None = None) -> OutboxStats:
    queries = OutboxQueries(outbox.config.collection, 6_000, 3_000, count_cap=cap)
    plan = _recorded(queries.stats(5.0), [] if seen is None else seen)
    if flavour == "sync":
        return run_plan(plan, outbox.connections.collection())
    return await run_plan_async(plan, outbox.connections.async_collection())


def _recorded[T](plan: Plan[T], seen: list[Operation]) -> Plan[T]:
    """``plan``, keeping every operation it yields in ``seen``."""
    reply: Any = None
    while True:
        try:
            operation = plan.send(reply)
        except StopIteration as done:
            return done.value
        seen.append(operation)
        reply = yield operation


def _hours(stats: OutboxStats) -> float:
    assert stats.oldest_pending_age_seconds is not None
    return stats.oldest_pending_age_seconds / 3600


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_stats_raw_state_keys_within_cap_expect_exact_counts_and_oldest_head_age(
    outbox: MongoOutbox, flavour: str
) -> None:
    """With no more keys than the cap, stats count exactly and age the oldest pending head (claimed included)."""
    await _put(outbox, STATE)
    stats = await outbox.storage().stats() if flavour == "async" else outbox.sync_storage().stats()
    assert (stats.pending, stats.claimed, stats.published, stats.abandoned) == (9, 2, 2, 2)
    assert _hours(stats) == pytest.approx(10, abs=0.01)
    # A cap of 2 reads k0's two entries, then walks to k1's head: still exact.
    assert _hours(await _run(outbox, 2, flavour)) == pytest.approx(10, abs=0.01)


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_stats_more_keys_than_cap_expect_first_cap_keys_heads_read_only(
    outbox: MongoOutbox, flavour: str
) -> None:
    """Past the cap the age is the oldest of the first ``cap`` keys' heads and the keyless head, read one entry a key."""
    rows: list[tuple[str | None, float, str]] = [(None, 5, "pending")]
    for key in range(12):
        # k00 has a run of two; k11, past the cap, holds the truly oldest head.
        hours = 400 if key == 11 else 20 - key
        rows += [(f"k{key:02}", hours, "pending")] * (2 if key == 0 else 1)
    await _put(outbox, rows)
    cap = 3
    seen: list[Operation] = []
    stats = await _run(outbox, cap, flavour, seen)
    assert (stats.pending, stats.count_cap) == (cap, cap)
    assert _hours(stats) == pytest.approx(20, abs=0.01)  # k00's head; k11's 400 h lie past the cap
    keyed = [op for op in seen if isinstance(op, Aggregate) and _on_keyed_index(op)]
    lane, probes = keyed[0], keyed[1:]
    assert {"$limit": cap} in lane.pipeline
    # The lane's cap of entries covered k00 (two) and k01; one probe of one entry reached k02.
    assert len(probes) == 1 and all({"$limit": 1} in op.pipeline for op in probes)
    assert probes[0].pipeline[0]["$match"]["partition_key"]["$gt"] == "k01"
    exact = await _run(outbox, 100, flavour)
    assert _hours(exact) == pytest.approx(400, abs=0.01)


def _on_keyed_index(operation: Aggregate) -> bool:
    """Whether ``operation`` reads the keyed index (the keyless lane matches ``partition_key`` None)."""
    match: dict[str, Any] = dict(operation.pipeline[0].get("$match", {}))
    return match.get("state") == KEYED_PENDING.partial["state"] and match.get("partition_key") is not None
