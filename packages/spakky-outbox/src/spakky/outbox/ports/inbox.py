"""Inbox storage port: the consumer side of at-least-once delivery.

An inbox keeps one record per (consumer name, message identity). A handler
made idempotent with `spakky.outbox.inbox.Idempotent` runs only when its
record is new, in one of two modes:

- transactional: `IAsyncInboxStorage.record` writes the record inside the
  handler's ``@Transactional()``, through the same session, pipeline or
  client session as the handler's business writes, so both commit or roll
  back together;
- lease: for effects outside the database, `IAsyncInboxStorage.acquire_lease`
  records the message at once with a lease, the handler runs, and
  `IAsyncInboxStorage.finish_lease` marks it done. A crash mid-handler leaves
  the lease to lapse, so the redelivery runs it again; a finished one never.

Records older than the dedup window are swept with `purge` in bounded
batches, by the consuming application itself
(`spakky.outbox.inbox.sweeper`), unless they expire on their own where the
store has TTLs (``expires_by_itself``). The async port is written once in
`spakky.outbox.ports.async_inbox`; the sync one in
`spakky.outbox.ports.sync_inbox` is generated from it (``tools/unasync.py``).
"""

from spakky.outbox.ports.async_inbox import IAsyncInboxStorage
from spakky.outbox.ports.inbox_records import InboxLease, InboxStats, LeaseOutcome
from spakky.outbox.ports.sync_inbox import IInboxStorage

__all__ = ["IAsyncInboxStorage", "IInboxStorage", "InboxLease", "InboxStats", "LeaseOutcome"]
