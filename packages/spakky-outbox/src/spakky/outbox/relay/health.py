"""Outbox health for orchestrators: storage reachable, relay cycling, backlog not too old, broker state.

`OutboxHealthCheck` is a Pod the core plugin registers in every application;
a readiness or liveness endpoint awaits `OutboxHealthCheck.check`, and the
``spakky-outbox health`` command runs the same check from the command line.
Where this process relays through one of the outbox's delivery adapters, the
health also carries the adapter's broker connection (connected, or
reconnecting since when and why), reported without judging it: the backlog
age is the verdict on a broker that stopped taking events.
"""

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.common.config import OutboxConfig, redact_credentials
from spakky.outbox.delivery.batch import BrokerState, IBrokerConnectionSource
from spakky.outbox.ports.storage import (
    IAsyncOutboxAdministration,
    IAsyncOutboxStorage,
    IOutboxAdministration,
    IOutboxStorage,
)
from spakky.outbox.relay.relay import (
    AsyncOutboxRelayBackgroundService,
    OutboxRelayBackgroundService,
)

DEFAULT_STORAGE_TIMEOUT_SECONDS = 5.0
"""How long the check waits for the storage before calling it unreachable."""


@dataclass(frozen=True)
class BrokerHealth:
    """The broker connection of this process's delivery adapter, as the adapter last saw it."""

    broker: str
    """``kafka`` or ``rabbitmq``."""
    target: str
    """Where it connects, without credentials."""
    state: BrokerState
    """``connected``; ``down`` (reconnecting: the last exchange failed); ``not_connected`` (nothing sent yet)."""
    since: datetime
    """When the connection entered ``state`` (UTC)."""
    seconds_in_state: float
    """How long ago that was."""
    last_error: str | None
    """Why the last exchange failed (credentials removed); None while connected."""


@dataclass(frozen=True)
class OutboxHealth:
    """The outcome of one health check; ``problems`` says why it is unhealthy."""

    healthy: bool
    """True when no problem was found."""
    storage_reachable: bool | None
    """Whether the storage answered; None when it cannot report (no administration capability)."""
    relay_running: bool | None
    """Whether this process's relay finished a cycle recently; None when it runs no relay."""
    seconds_since_last_cycle: float | None
    """Seconds since this process's relay last finished a cycle; None before the first or without a relay."""
    oldest_pending_age_seconds: float | None
    """Age of the oldest pending message; None when nothing is pending or it is unknown."""
    problems: tuple[str, ...] = ()
    """One line per failed check."""
    broker: BrokerHealth | None = None
    """The delivery adapter's broker connection; None when this process relays through no adapter of the outbox's."""


@Pod()
class OutboxHealthCheck:
    """Checks the outbox of this application: storage, relay (when it runs here) and backlog age."""

    def __init__(
        self,
        config: OutboxConfig,
        storage: IAsyncOutboxStorage | None = None,
        sync_storage: IOutboxStorage | None = None,
        relay: AsyncOutboxRelayBackgroundService | None = None,
        sync_relay: OutboxRelayBackgroundService | None = None,
        delivery: IBrokerConnectionSource | None = None,
    ) -> None:
        """Bind to whichever storage, relay and delivery adapter this application has."""
        self._config = config
        self._storage = storage
        self._sync_storage = sync_storage
        self._relay = relay if relay is not None else sync_relay
        self._delivery = delivery
        self._created = time.monotonic()

    @property
    def relay_stale_after_seconds(self) -> float:
        """Default limit on the gap between two relay cycles before the relay counts as stuck.

        A cycle rests at most ``max(polling interval, outage backoff max)`` and
        works on a batch at most ``claim_timeout_seconds`` (past that its claims
        are void): the claim timeout plus three rests, 390 s at defaults.
        """
        config = self._config
        rest = max(config.polling_interval_seconds, config.outage_backoff_max_seconds)
        return config.claim_timeout_seconds + 3 * rest

    async def check(
        self,
        max_pending_age_seconds: float | None = None,
        *,
        relay_stale_after_seconds: float | None = None,
        storage_timeout_seconds: float = DEFAULT_STORAGE_TIMEOUT_SECONDS,
    ) -> OutboxHealth:
        """Check the storage, the relay of this process and the age of the backlog.

        Args:
            max_pending_age_seconds: Unhealthy when the oldest pending message
                is older than this; None checks no age.
            relay_stale_after_seconds: Unhealthy when this process's relay
                finished no cycle for this long (also counted from startup
                before its first cycle); default `relay_stale_after_seconds`.
            storage_timeout_seconds: How long to wait for the storage.

        Returns:
            The health, healthy when no check failed. A storage without the
            administration capability and a process without a relay are not
            checked (None), not failures.
        """
        problems: list[str] = []
        reachable, age = await self._storage_state(storage_timeout_seconds, problems)
        if max_pending_age_seconds is not None and age is not None and age > max_pending_age_seconds:
            problems.append(
                f"oldest pending message is {age:.1f}s old (limit {max_pending_age_seconds:g}s)"
            )
        running, since = self._relay_state(
            self.relay_stale_after_seconds
            if relay_stale_after_seconds is None
            else relay_stale_after_seconds,
            problems,
        )
        return OutboxHealth(
            healthy=not problems,
            storage_reachable=reachable,
            relay_running=running,
            seconds_since_last_cycle=since,
            oldest_pending_age_seconds=age,
            problems=tuple(problems),
            broker=self._broker_state(),
        )

    def _broker_state(self) -> BrokerHealth | None:
        if self._delivery is None:
            return None
        connection = self._delivery.broker_connection
        return BrokerHealth(
            broker=connection.broker,
            target=connection.target,
            state=connection.state,
            since=connection.changed_at,
            seconds_in_state=time.monotonic() - connection.since,
            last_error=connection.last_error,
        )

    async def _storage_state(
        self, timeout: float, problems: list[str]
    ) -> tuple[bool | None, float | None]:
        storage, sync_storage = self._storage, self._sync_storage
        try:
            if isinstance(storage, IAsyncOutboxAdministration):
                # The same timeout on the server: a probe that gives up leaves no read running.
                stats = await asyncio.wait_for(storage.stats(timeout_seconds=timeout), timeout)
            elif isinstance(sync_storage, IOutboxAdministration):
                stats = await asyncio.wait_for(
                    asyncio.to_thread(sync_storage.stats, timeout_seconds=timeout), timeout
                )
            else:
                return None, None
        except TimeoutError:
            problems.append(f"storage did not answer within {timeout:g}s")
            return False, None
        except Exception as error:
            problems.append(
                redact_credentials(f"storage unreachable: {type(error).__name__}: {error}")
            )
            return False, None
        return True, stats.oldest_pending_age_seconds

    def _relay_state(
        self, stale_after: float, problems: list[str]
    ) -> tuple[bool | None, float | None]:
        if self._relay is None:
            return None, None
        since = self._relay.seconds_since_last_cycle
        quiet = time.monotonic() - self._created if since is None else since
        if quiet > stale_after:
            what = "since startup" if since is None else "since its last one"
            problems.append(
                f"relay finished no cycle in the {quiet:.1f}s {what} (limit {stale_after:g}s)"
            )
            return False, since
        return True, since
