"""Claim and acknowledge a storage's backlog, as a relay does, to check what each claim held."""

import asyncio

from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.ports.async_storage import IAsyncOutboxFullStorage
from spakky.outbox.ports.sync_storage import IOutboxFullStorage


async def drain_claims(
    storage: IAsyncOutboxFullStorage | IOutboxFullStorage, count: int, max_retry: int, limit: int = 100
) -> list[list[OutboxMessage]]:
    """Claim (up to ``limit``) and acknowledge until ``count`` messages came out; the claims, in order.

    A sync storage runs in a worker thread. Every claim must hold something and
    be acknowledged whole, or the drain fails naming how far it got.
    """
    claims: list[list[OutboxMessage]] = []
    delivered = 0
    while delivered < count:
        if isinstance(storage, IAsyncOutboxFullStorage):
            claimed = await storage.fetch_pending(limit, max_retry)
            acknowledged = await storage.mark_published_many([m.id for m in claimed])
        else:
            claimed = await asyncio.to_thread(storage.fetch_pending, limit, max_retry)
            acknowledged = await asyncio.to_thread(storage.mark_published_many, [m.id for m in claimed])
        assert claimed, f"an empty claim after {delivered} of {count} delivered"
        assert acknowledged == len(claimed), f"{acknowledged} of a claim of {len(claimed)} acknowledged"
        claims.append(claimed)
        delivered += len(claimed)
    return claims
