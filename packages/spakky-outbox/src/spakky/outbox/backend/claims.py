"""Claim policy every storage shares: how a batch is split between keys.

A storage reads two lanes (see docs/writing-a-backend.md): the oldest eligible
keyless messages, and for some partition keys the eligible prefix of each
key's oldest undelivered messages. `choose_batch` decides which of those one
claim takes, so every backend spreads keys across relays the same way.
"""

from collections.abc import Callable, Iterable, Sequence

from spakky.outbox.common.reasons import storable_reason

KEY_RUN = 10
"""Most messages of one key a claim takes: a deep backlog spans few keys per
batch (leaving the others to other relays), a shallow one still fills it."""


def key_run(limit: int) -> int:
    """How many of one key's messages a claim of ``limit`` may take."""
    return max(1, min(limit, KEY_RUN))


def choose_batch[T](
    keyless: Sequence[T],
    runs: Iterable[Sequence[T]],
    limit: int,
    position: Callable[[T], int],
) -> list[T]:
    """Pick what one claim takes from its two lanes, in save order.

    Args:
        keyless: Eligible keyless candidates, oldest first.
        runs: Per key, in the order the storage visits keys, the eligible
            prefix of that key's undelivered messages (at most `key_run`).
        limit: Batch size.
        position: Save order of a candidate (the storage's tie-breaker).

    Returns:
        At most ``limit`` candidates: whole runs, key after key, until the
        batch is full, merged with the keyless lane by save order. Cutting the
        merge at ``limit`` keeps each key's part a prefix.
    """
    keyed: list[T] = []
    for run in runs:
        keyed.extend(run[: limit - len(keyed)])
        if len(keyed) >= limit:
            break
    return sorted([*keyless[:limit], *keyed], key=position)[:limit]


def within_bytes[T](
    chosen: Sequence[T], size: Callable[[T], int], budget: int, *, keep_first: bool = True
) -> list[T]:
    """Cut a chosen batch (in claim order) where its payloads would pass ``budget`` bytes.

    The first message stays (unless ``keep_first`` is False: the claim
    already holds others), so a message larger than the budget is still
    delivered (alone). Cutting a prefix keeps each key's part a prefix.
    """
    kept: list[T] = []
    total = 0
    for item in chosen:
        total += size(item)
        if (kept or not keep_first) and total > budget:
            break
        kept.append(item)
    return kept


def undecodable_reason(error: BaseException) -> str:
    """The reason kept with a stored message a storage could not decode (storable everywhere)."""
    return storable_reason(f"undecodable stored message: {type(error).__name__}: {error}")
