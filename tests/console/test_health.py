"""One verdict everywhere: ``spakky-outbox health``, the console (page and API) and spakky-actuator's health.

Over one real application on PostgreSQL (spakky-actuator loaded, so the
outbox's probe is in its health), the command is run against the same table
with the same age limit the console and the probe judge by; each says the
same thing, healthy with a fresh backlog and unhealthy once it is too old.
"""

import io
import re
from html import unescape

import pytest
from spakky.actuator.result import ActuatorEndpoint, HealthStatus
from spakky.actuator.service import ActuatorAggregationService
from spakky.outbox.application.loop import ApplicationEventLoop
from spakky.outbox.cli.main import main
from spakky.outbox.console.app import outbox_console
from spakky.outbox.console.config import OutboxConsoleConfig
from sqlalchemy import text
from starlette.testclient import TestClient

from .outbox_app import Outbox, environ, started_outbox

_SECONDS = re.compile(r"\d+(?:\.\d+)?s\b")
"""Ages move between two checks: compare the wording, not the tenths."""
AGE_LIMIT = "120"
"""Seconds; the seeded backlog is 180 s old, so the fresh one passes it and the old one does not."""


def _same(text: str) -> str:
    return _SECONDS.sub("Ns", text)


def _verdicts(outbox: Outbox) -> dict[str, tuple[bool, str]]:
    """(healthy, verdict line) from the command, the console page, the console API and the actuator."""
    out = io.StringIO()
    with environ(outbox.env):
        code = main(["health", "--max-pending-age", AGE_LIMIT], out)
    context = outbox.app.application_context
    with TestClient(outbox_console(context, OutboxConsoleConfig(max_pending_age_seconds=float(AGE_LIMIT)))) as client:
        page = client.get("/")
        api = client.get("/api/health")
    section = re.search(r'<section class="health (\w+)" id="health">\s*<strong>\w+</strong>\s*<span>(.*?)</span>', page.text, re.S)
    assert section is not None, page.text
    actuator = context.get(ActuatorAggregationService)
    result = context.get(ApplicationEventLoop).run(actuator.evaluate_health_async(), timeout=30)
    assert result.endpoint is ActuatorEndpoint.HEALTH
    (component,) = [c for c in result.components if c.name == "outbox"]
    healthy_api = api.json()["healthy"]
    assert api.status_code == (200 if healthy_api else 503)
    api_line = "unhealthy: " + "; ".join(api.json()["problems"]) if not healthy_api else None
    verdicts = {
        # The command prints its target first, then the verdict.
        "command": (code == 0, out.getvalue().strip().splitlines()[-1]),
        "page": (section.group(1) == "ok", unescape(section.group(2))),
        "actuator": (component.status is HealthStatus.HEALTHY, str(component.details["verdict"])),
    }
    if api_line is not None:
        verdicts["api"] = (False, api_line)
    assert (result.status is HealthStatus.HEALTHY) is verdicts["actuator"][0]
    return {where: (healthy, _same(line)) for where, (healthy, line) in verdicts.items()}


@pytest.mark.parametrize("old", [False, True], ids=["fresh-backlog", "old-backlog"])
def test_console_health_expect_same_verdict_as_command_and_actuator(postgres_url: str, old: bool) -> None:
    """The console, ``spakky-outbox health`` and the actuator's outbox component agree, healthy or not."""
    with started_outbox(postgres_url, {"SPAKKY_OUTBOX_CONSOLE__MAX_PENDING_AGE_SECONDS": AGE_LIMIT}) as outbox:
        outbox.seed(4, key="customer-1")
        if not old:
            with outbox.engine.begin() as connection:
                connection.execute(text(f"UPDATE {outbox.table} SET created_at = now()"))
        verdicts = _verdicts(outbox)
    expected = (
        "unhealthy: oldest pending message is Ns old (limit Ns)"
        if old
        else "healthy: storage reachable, oldest pending message Ns old"
    )
    assert verdicts == dict.fromkeys(verdicts, (not old, expected)), verdicts
