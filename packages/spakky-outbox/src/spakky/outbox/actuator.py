"""The outbox's health check as a spakky-actuator probe (needs ``spakky-outbox[actuator]``).

Where the application loads spakky-actuator, its health and readiness
endpoints include a component ``outbox`` whose verdict is the one
``spakky-outbox health`` prints and the console shows: the same
`OutboxHealthCheck`, worded by the same function, judged by the same age limit
as the console (``SPAKKY_OUTBOX_CONSOLE__MAX_PENDING_AGE_SECONDS``, none by default).
"""

from typing import override

from spakky.actuator.interfaces.probe import AbstractAsyncHealthProbe
from spakky.actuator.result import ComponentHealthResult
from spakky.core.pod.annotations.pod import Pod
from spakky.outbox.cli.render import broker_json, health_line
from spakky.outbox.console.config import OutboxConsoleConfig
from spakky.outbox.relay.health import OutboxHealthCheck

PROBE_NAME = "outbox"
"""The component's name in the actuator's results."""


@Pod()
class OutboxActuatorHealthProbe(AbstractAsyncHealthProbe):
    """Reports `OutboxHealthCheck` to spakky-actuator: healthy or not, the verdict line and the figures."""

    def __init__(self, health: OutboxHealthCheck) -> None:
        """Judge with the application's health check and the console's age limit."""
        self._health = health
        self._max_pending_age_seconds = OutboxConsoleConfig().max_pending_age_seconds

    @property
    @override
    def name(self) -> str:
        return PROBE_NAME

    @override
    async def check_async(self) -> ComponentHealthResult:
        health = await self._health.check(self._max_pending_age_seconds)
        details: dict[str, object] = {
            "verdict": health_line(health),
            "storage_reachable": health.storage_reachable,
            "relay_running": health.relay_running,
            "seconds_since_last_cycle": health.seconds_since_last_cycle,
            "oldest_pending_age_seconds": health.oldest_pending_age_seconds,
            "max_pending_age_seconds": self._max_pending_age_seconds,
            "problems": list(health.problems),
            "broker": broker_json(health.broker),
        }
        if health.healthy:
            return ComponentHealthResult.healthy(PROBE_NAME, details=details)
        return ComponentHealthResult.unhealthy(PROBE_NAME, details=details)
