"""What every rule module uses: message builders, the rule-message format, waiting on the harness clock, the relay driver.

A rule module takes the kit (`__all__`, the harness types included) in one
line: ``from .support import *``.
"""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.storage import (
    IAsyncOutboxBatchAcknowledgement,
    IAsyncOutboxStorage,
)
from spakky.outbox.relay.relay import AsyncOutboxRelayBackgroundService
from spakky.outbox.testing.harness import (
    AbstractOutboxHarness,
    Capability,
    RawOutboxRecord,
)
from spakky.outbox.testing.plugin import BACKEND, CAPABILITY_MARK, LEAK
from spakky.outbox.testing.transport import AsyncRecordingEventTransport

__all__ = [
    "MAX_RETRY",
    "AbstractOutboxHarness",
    "AsyncRecordingEventTransport",
    "Capability",
    "RawOutboxRecord",
    "acknowledge",
    "capability",
    "claim_after_expiry",
    "claim_ends_within",
    "eventually",
    "ids",
    "message",
    "names",
    "pace",
    "raw_by_id",
    "relay_over",
    "rule",
    "spend_budget",
]

MAX_RETRY = 5
"""The retry budget the suite passes to ``fetch_pending``."""


type TestFunction = Callable[..., Any]


_labels = itertools.count(1)


def capability[F: TestFunction](required: Capability) -> Callable[[F], F]:
    """Tag a suite test with the capability it needs; undeclared ones are skipped."""

    def tag(test: F) -> F:
        return pytest.mark.spakky_outbox_capability(required)(test)  # plugin.CAPABILITY_MARK

    return tag


def message(
    key: str | None = None,
    *,
    name: str | None = None,
    payload: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> OutboxMessage:
    """Build a fresh message as the outbox bus would; its event name labels it in failures."""
    message_id = uuid4()
    return OutboxMessage(
        id=message_id,
        event_name=name if name is not None else f"m{next(_labels)}",
        payload=payload if payload is not None else b'{"id":"' + str(message_id).encode() + b'"}',
        headers=headers if headers is not None else {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        created_at=datetime.now(UTC),
        partition_key=key,
    )


def names(messages: Iterable[OutboxMessage | RawOutboxRecord]) -> list[str]:
    """Labels of ``messages`` (with their key), in order, for failure messages."""
    return [m.event_name if m.partition_key is None else f"{m.event_name}@{m.partition_key}" for m in messages]


def ids(messages: Sequence[OutboxMessage]) -> list[UUID]:
    """The ids of ``messages``, in order."""
    return [m.id for m in messages]


async def raw_by_id(harness: AbstractOutboxHarness) -> dict[UUID, RawOutboxRecord]:
    """Backdoor read keyed by id."""
    return {record.id: record for record in await harness.raw_records()}


def rule(text: str, seen: object) -> str:
    """An assertion message: the rule broken, and what the storage did instead."""
    return f"rule: {text}; seen: {seen}"


async def eventually[T](
    harness: AbstractOutboxHarness,
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    timeout: float,
    what: str,
    step: float = 0.05,
    paced: bool = False,
) -> tuple[T, float]:
    """Re-run ``probe`` until ``accept`` holds, advancing the harness clock.

    With ``paced``, real time passes with the harness clock (see `pace`): a relay
    running beside the test renews its claims on its own real-time clock, so a
    manual clock raced ahead would lapse them before the relay got to run.

    Returns:
        The accepted value and the clock time waited for it.

    Raises:
        AssertionError: ``timeout`` (harness clock) passed first; names ``what``.
    """
    waited = 0.0
    while True:
        value = await probe()
        if accept(value):
            return value, waited
        if waited >= timeout:
            raise AssertionError(f"waited {timeout:g}s for {what}; last seen: {value!r}")
        await (pace(harness, step) if paced else harness.advance(step))
        waited += step


def claim_ends_within(harness: AbstractOutboxHarness) -> float:
    """How long a claim made now may live unrenewed: the lease, else the claim timeout."""
    return harness.claim_lease_seconds or harness.claim_timeout_seconds


async def claim_after_expiry(
    harness: AbstractOutboxHarness,
    storage: IAsyncOutboxStorage,
    limit: int = 100,
    *,
    what: str = "an expired claim to be claimable again",
) -> list[OutboxMessage]:
    """Claim with ``storage`` until something comes back, within a few claim lifetimes."""
    claimed, _ = await eventually(
        harness,
        lambda: storage.fetch_pending(limit, MAX_RETRY),
        bool,
        timeout=harness.claim_timeout_seconds * 6,
        what=what,
    )
    return claimed


async def spend_budget(harness: AbstractOutboxHarness, spent: OutboxMessage, control: OutboxMessage) -> None:
    """Write ``spent`` and ``control``, claim both with one storage and spend ``spent``'s retry budget; the claims stay."""
    await harness.write([spent, control])
    holder = harness.new_storage()
    assert ids(await holder.fetch_pending(2, MAX_RETRY)) == [spent.id, control.id], rule(
        "pending messages can be claimed", "not both"
    )
    for _ in range(MAX_RETRY):
        await holder.increment_retry(spent.id)


def relay_over(
    harness: AbstractOutboxHarness,
    storage: IAsyncOutboxStorage,
    transport: AsyncRecordingEventTransport,
    **settings: object,
) -> AsyncOutboxRelayBackgroundService:
    """The async relay on ``storage`` with the harness's claim timings and no retry backoff."""
    config = OutboxConfig().model_copy(
        update={
            "claim_timeout_seconds": harness.claim_timeout_seconds,
            "claim_lease_seconds": claim_ends_within(harness),
            "retry_backoff_base_seconds": 0.0,
            "retry_backoff_max_seconds": 0.0,
            "published_retention_seconds": None,
        }
        | settings
    )
    relay = AsyncOutboxRelayBackgroundService(storage, transport, config)
    relay.set_stop_event(asyncio.Event())
    return relay


async def pace(harness: AbstractOutboxHarness, seconds: float) -> None:
    """Let ``seconds`` pass on the harness clock *and* in real time (the relay's own clock).

    A server-clock harness sleeps in `advance` already; a manual clock moves at
    once, so the rest is slept.
    """
    started = time.monotonic()
    await harness.advance(seconds)
    left = seconds - (time.monotonic() - started)
    if left > 0:
        await asyncio.sleep(left)


async def acknowledge(storage: IAsyncOutboxStorage, message_ids: Sequence[UUID]) -> None:
    """Publish ``message_ids`` in one call where the storage can, else one by one."""
    if isinstance(storage, IAsyncOutboxBatchAcknowledgement):
        await storage.mark_published_many(message_ids)
    else:
        for message_id in message_ids:
            await storage.mark_published(message_id)


@pytest.fixture(autouse=True)
async def conformance_guard(
    request: pytest.FixtureRequest, outbox_harness: AbstractOutboxHarness
) -> AsyncIterator[None]:
    """Skip tests of undeclared capabilities; after each test, check for leaks."""
    request.node.stash[BACKEND] = outbox_harness.name
    mark = request.node.get_closest_marker(CAPABILITY_MARK)
    required: Capability | None = None if mark is None else Capability(mark.args[0])
    if required is not None and required not in outbox_harness.capabilities:
        pytest.skip(f"capability not declared: {required}")
    yield
    try:
        await outbox_harness.assert_no_leaks()
    except AssertionError as error:
        request.node.stash[LEAK] = str(error) or "a connection or session was left open"
        raise
