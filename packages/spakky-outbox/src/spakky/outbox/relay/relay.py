"""Outbox relay background services (sync and async): the public import path.

Failure taxonomy, as in 8.5: a transport refusal (`EventDeliveryRejectedError`)
spends that message's retry budget and holds back the rest of its key; an
outage spends nobody's budget; a spent budget abandons the message.

Refined: a plain exception from one message while others of the batch go
through is that message's fault: it is retried alone at once and, failing
again, counts as refused (budget, reason, key released). Only when nothing of
the batch gets through (or a closed transport, or three plain failures in a
row) is it an outage, and the batch is released untouched.

Beyond 8.5: the whole claimed batch is sent, flushed once and acknowledged in
one round trip where the storage can. Whatever was sent is acknowledged with
retries until the storage takes it (or the claim is provably over), and no new
claim is made meanwhile, so a storage restart between flush and acknowledgement
costs seconds, not a claim timeout. On storages with liveness the relay renews
its claims while it works and while it settles, so a dead relay's messages free
up within a lease; a relay that outlived its lease (paused, frozen) or whose
renewal failed or was refused starts no send and no flush of that batch. A
refusal that spends the last retry abandons the message at once, so its key
goes on in the same batch; a message claimed with its budget already spent (a
lowered ``MAX_RETRY_COUNT``) is abandoned unsent. Every stored reason is
redacted, cleaned and bounded (`spakky.outbox.common.reasons`).
A storage error never ends the relay; any batch that found work is followed by the next
claim without sleeping, and an empty claim just after one by a short pause that
grows to the polling interval; a stop finishes what was sent and releases the rest.

The async relay is written once (`spakky.outbox.relay.async_relay`); the sync
one (`spakky.outbox.relay.sync_relay`) is generated from it.
"""

from spakky.outbox.relay.async_relay import AsyncOutboxRelayBackgroundService
from spakky.outbox.relay.sync_relay import OutboxRelayBackgroundService

__all__ = ["AsyncOutboxRelayBackgroundService", "OutboxRelayBackgroundService"]
