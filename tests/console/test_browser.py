"""The operator console in a real headless Chromium, over a real Spakky application on PostgreSQL.

The application is built the way ``spakky-outbox`` builds it (``load_plugins``
from ``SPAKKY_*`` settings, relay off) with the SQLAlchemy storage on a fresh
table; the console is mounted at ``/outbox`` inside a parent Starlette app, as
a service would mount it. The outbox is filled through the storage's own calls
(save in a transaction, claim, abandon with a reason), and every check of what
an action did reads the table with SQL, not through the console.
"""

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from playwright.sync_api import Page, expect
from pydantic import SecretStr
from spakky.outbox.common.fingerprint import failure_fingerprint
from spakky.outbox.console.app import outbox_console
from spakky.outbox.console.config import OutboxConsoleConfig
from spakky.outbox.ports.storage import IAsyncOutboxRetryScheduling
from spakky.outbox.testing.waiting import wait_for
from spakky.plugins.outbox_sqlalchemy.schema import figures_table_name
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Mount, Route

from .conftest import serve
from .outbox_app import Outbox

TOKEN = "console-" + uuid4().hex
NO_ROUTE = "EventDeliveryRejectedError: no route for order {n}"
TIMEOUT = "TimeoutError: broker 10.0.0.5:5672 did not answer in 30 s"
Shot = Callable[[Page, str], Path]
RELAY_WORKER = Path(__file__).parents[1] / "faults" / "worker.py"
"""A relay process of the fault tests: a Spakky app relaying to a file sink."""


def _service(outbox: Outbox, token: str | None, show_payloads: bool = False) -> Starlette:
    """A service with the console mounted at ``/outbox``."""
    config = OutboxConsoleConfig(token=None if token is None else SecretStr(token), show_payloads=show_payloads)

    async def home(_: object) -> PlainTextResponse:
        return PlainTextResponse("orders service")

    return Starlette(
        routes=[Route("/", home), Mount("/outbox", outbox_console(outbox.app.application_context, config))]
    )


@pytest.fixture
def console(outbox: Outbox) -> Iterator[str]:
    """Base URL of the console (with a token) mounted in a service."""
    with serve(_service(outbox, TOKEN)) as base:
        yield f"{base}/outbox"


def sign_in(page: Page, console: str, name: str = "ada") -> None:
    page.goto(f"{console}/sign-in")
    page.fill("input[name=name]", name)
    page.fill("input[name=token]", TOKEN)
    page.click("#sign-in-submit")
    expect(page.locator("header .who")).to_contain_text(name)


def test_console_browser_overview_with_backlog_expect_storage_counts(
    outbox: Outbox, console: str, page: Page, screenshot: Shot
) -> None:
    """The overview shows the backlog the table holds: counts by state, the oldest pending age, the relay holding claims."""
    for key in ("customer-1", "customer-2", "customer-3", None):
        outbox.seed(12, key=key)
    outbox.seed(6, NO_ROUTE, key="customer-7")
    outbox.seed(3, TIMEOUT)

    async def claim() -> int:
        return len(await outbox.storage.fetch_pending(10, 5))

    assert outbox.loop.run_blocking(claim()) == 10
    page.goto(f"{console}/")
    pending = outbox.count("published_at IS NULL AND abandoned_at IS NULL")
    assert pending == 48
    expect(page.locator("#count-pending")).to_have_text(str(pending))
    expect(page.locator("#count-abandoned")).to_have_text(str(outbox.count("abandoned_at IS NOT NULL")))
    expect(page.locator("#oldest-pending")).to_contain_text("min")
    expect(page.locator("#health")).to_contain_text("Healthy")
    expect(page.locator("#target")).to_contain_text(outbox.table)
    expect(page.locator("#target")).not_to_contain_text(TOKEN)
    assert outbox.count("claimed_by IS NOT NULL AND lease_until > now()") == 10
    expect(page.locator("#relays tbody tr")).to_have_count(1)
    expect(page.locator("#relays .held")).to_have_text("10")
    screenshot(page, "overview")


def test_console_browser_requeue_group_expect_storage_changes(
    outbox: Outbox, console: str, page: Page, screenshot: Shot
) -> None:
    """Requeue one failure group from the page: the dry run changes nothing, the confirmation requeues exactly that group."""
    outbox.seed(20, key="customer-1")
    route = outbox.seed(6, NO_ROUTE, key="customer-7")
    outbox.seed(3, TIMEOUT)
    sign_in(page, console)
    page.goto(f"{console}/abandoned")
    fingerprint = failure_fingerprint(NO_ROUTE.format(n=1))
    row = page.locator(f'#groups tr[data-fingerprint="{fingerprint}"]')
    expect(row.locator(".count")).to_have_text("6")
    expect(page.locator("#groups tbody tr")).to_have_count(2)
    screenshot(page, "abandoned")

    row.locator(".requeue-group").click()
    expect(page.locator("#dry-run-count")).to_have_text("6")
    assert outbox.count("abandoned_at IS NOT NULL") == 9
    screenshot(page, "confirm")

    page.click("#confirm")
    expect(page.locator("#affected")).to_have_text("6")
    assert outbox.count("abandoned_at IS NOT NULL") == 3
    ids = ", ".join(f"'{i}'" for i in route)
    assert outbox.count(f"id IN ({ids}) AND abandoned_at IS NULL AND retry_count = 0 AND published_at IS NULL") == 6
    screenshot(page, "done")

    page.goto(f"{console}/")
    expect(page.locator("#count-abandoned")).to_have_text("3")
    expect(page.locator("#count-pending")).to_have_text("26")
    page.goto(f"{console}/audit")
    first = page.locator("#audit tbody tr").first
    expect(first).to_contain_text("requeue")
    expect(first).to_contain_text(f"group {fingerprint}")
    expect(first).to_contain_text("ada (127.0.0.1)")
    screenshot(page, "audit")


def test_console_browser_without_token_expect_read_only_and_refused(outbox: Outbox, page: Page) -> None:
    """A console without a token shows the backlog, offers no action and refuses a posted one."""
    outbox.seed(4, NO_ROUTE)
    with serve(_service(outbox, None)) as base:
        page.goto(f"{base}/outbox/abandoned")
        expect(page.locator("#read-only")).to_be_visible()
        expect(page.locator("#groups .count")).to_have_text("4")
        expect(page.locator("button")).to_have_count(0)
        page.goto(f"{base}/outbox/sign-in")
        expect(page.locator("main")).to_contain_text("read-only")
        refused = page.request.post(f"{base}/outbox/actions/requeue/dry-run", form={"scope": "all"})
        assert refused.status == 403 and "read-only" in refused.text()
        api = page.request.post(
            f"{base}/outbox/api/actions/requeue/dry-run",
            data={"scope": "all"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert api.status == 403
    assert outbox.count("abandoned_at IS NOT NULL") == 4


def test_console_browser_wrong_token_and_forged_form_expect_refused(
    outbox: Outbox, console: str, page: Page, screenshot: Shot
) -> None:
    """A wrong token does not sign in; a form on another site cannot act even for a signed-in operator."""
    outbox.seed(5, TIMEOUT)
    page.goto(f"{console}/sign-in")
    page.fill("input[name=token]", "not-the-token")
    page.click("#sign-in-submit")
    expect(page.locator("#problem")).to_contain_text("not the console token")
    screenshot(page, "sign-in-refused")

    sign_in(page, console)
    attacker_form = (
        f'<form method="post" action="{console}/actions/requeue/dry-run">'
        '<input name="scope" value="all"><button id="go">win a prize</button></form>'
    )

    async def attacker(_: object) -> HTMLResponse:
        return HTMLResponse(attacker_form)

    with serve(Starlette(routes=[Route("/", attacker)])) as evil:
        page.goto(evil)
        page.click("#go")
        expect(page.locator("#problem")).to_be_visible()
        assert re.search(r"sign in|another site|CSRF", page.locator("#problem").inner_text())
    assert outbox.count("abandoned_at IS NOT NULL") == 5


def test_console_browser_pending_by_key_expect_blocked_keys_and_why(
    outbox: Outbox, console: str, page: Page, screenshot: Shot
) -> None:
    """Pending by key shows, oldest head first, the key a relay holds, the key waiting for a retry and why, and the free key."""
    held = outbox.seed(3, key="customer-2")
    retried = outbox.seed(4, key="customer-3")
    free = outbox.seed(2, key="customer-1")
    outbox.seed(5)  # keyless: not on the page
    relay = outbox.storage
    assert isinstance(relay, IAsyncOutboxRetryScheduling)

    async def hold() -> None:
        claimed = [m.id for m in await relay.fetch_pending(100, 5)]
        assert {held[0], retried[0], free[0]} <= set(claimed)
        await relay.schedule_retry(retried[0], 3600, "TimeoutError: broker 10.0.0.5:5672 did not answer in 30 s")
        await relay.release([i for i in claimed if i not in (held[0], retried[0])])

    outbox.loop.run_blocking(hold())
    assert outbox.count(f"id = '{retried[0]}' AND retry_count = 1") == 1
    page.goto(f"{console}/keys")
    rows = page.locator("#keys tbody tr")
    expect(rows).to_have_count(3)
    assert [rows.nth(i).get_attribute("data-key") for i in range(3)] == ["customer-2", "customer-3", "customer-1"]
    claimed = page.locator('#keys tr[data-key="customer-2"]')
    expect(claimed).to_have_attribute("data-state", "claimed")
    expect(claimed.locator(".reason")).to_contain_text("claimed by relay")
    expect(claimed).to_contain_text(str(held[0]))
    retrying = page.locator('#keys tr[data-key="customer-3"]')
    expect(retrying).to_have_attribute("data-state", "retrying")
    expect(retrying.locator(".reason")).to_contain_text("after 1 failed attempt(s); last error: TimeoutError")
    expect(page.locator('#keys tr[data-key="customer-1"]')).to_have_attribute("data-state", "waiting")
    screenshot(page, "keys")


ORDER_PAYLOAD = (
    b'{"order": 7, "customer": {"name": "Ada Lovelace", "email": "ada@example.org"}, '
    b'"payment": {"card_token": "tok_4242", "api_key": "sk-live-123"}, "callback": "https://shop:pw9@shop.example/hook"}'
)
ORDER_HEADERS = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "authorization": "Bearer eyJhbGciOi-secret",
    "spakky.auth.context_snapshot": "signed-snapshot-value",
}


def test_console_browser_message_detail_expect_stored_fields_and_redacted_payload(
    outbox: Outbox, console: str, page: Page, screenshot: Shot
) -> None:
    """From the abandoned and pending-by-key pages to a message's page: its stored fields; payload and headers only when enabled, secrets redacted."""
    abandoned = outbox.seed(2, NO_ROUTE, key="customer-7", payload=ORDER_PAYLOAD, headers=ORDER_HEADERS)
    (head,) = outbox.seed(1, key="customer-8", payload=ORDER_PAYLOAD, headers=ORDER_HEADERS)
    page.goto(f"{console}/keys")
    page.locator('#keys tr[data-key="customer-8"] a').click()
    expect(page.locator("#message-id")).to_have_text(str(head))
    expect(page.locator("#state")).to_have_text("waiting")
    expect(page.locator("#payload-hidden")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("Ada Lovelace")

    with serve(_service(outbox, TOKEN, show_payloads=True)) as base:
        page.goto(f"{base}/outbox/abandoned")
        page.locator(f'#messages tr[data-id="{abandoned[0]}"] a').click()
        expect(page).to_have_url(f"{base}/outbox/messages/{abandoned[0]}")
        with outbox.engine.connect() as connection:
            stored = connection.execute(
                text(f"SELECT retry_count, last_error, partition_key FROM {outbox.table} WHERE id = :id"),
                {"id": abandoned[0]},
            ).one()
        expect(page.locator("#state")).to_have_text("abandoned")
        expect(page.locator("#retry-count")).to_contain_text(str(stored.retry_count))
        expect(page.locator("#last-error")).to_have_text(stored.last_error)
        expect(page.locator("#partition-key")).to_have_text(stored.partition_key)
        expect(page.locator("#abandoned-at")).to_contain_text("UTC")
        expect(page.locator("#payload")).to_contain_text("Ada Lovelace")
        expect(page.locator("#headers")).to_contain_text("4bf92f3577b34da6a3ce929d0e0e4736")
        main = page.locator("main").inner_text()
        leaked = [s for s in ("tok_4242", "sk-live-123", "pw9", "eyJhbGciOi-secret", "signed-snapshot-value", TOKEN) if s in main]
        assert leaked == []
        screenshot(page, "message")


def test_console_browser_overview_delivery_expect_chart_from_relay_process_figures(
    outbox: Outbox, console: str, page: Page, screenshot: Shot, tmp_path: Path
) -> None:
    """A relay in another process writes its figures to the table; the overview draws its rate and commit-to-send."""
    payloads = [json.dumps({"key": "k", "seq": n}).encode() for n in range(40)]
    for payload in payloads:
        outbox.seed(1, payload=payload)
    page.goto(f"{console}/")
    expect(page.locator("#no-figures")).to_be_visible()
    (tmp_path / "go").touch()
    env = {
        **os.environ,
        **outbox.env,
        "SPAKKY_OUTBOX__RELAY": "async",
        "SPAKKY_OUTBOX__FIGURES_INTERVAL_SECONDS": "1",
        "PYTHONPATH": os.pathsep.join([str(RELAY_WORKER.parent), os.environ.get("PYTHONPATH", "")]),
    }
    with (tmp_path / "relay.log").open("wb") as log:
        relay = subprocess.Popen(
            [sys.executable, str(RELAY_WORKER), "sqlalchemy", str(tmp_path)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        figures = figures_table_name(outbox.table)

        def sent() -> bool:
            return outbox.count("published_at IS NOT NULL") == 40 and _figures_sent(outbox, figures) == 40

        wait_for(lambda: relay.poll() is not None or sent(), timeout=60)
        assert relay.poll() is None, f"the relay process ended; see {tmp_path / 'relay.log'}"
    finally:
        (tmp_path / "stop").touch()
        relay.wait(timeout=30)
    page.goto(f"{console}/")
    expect(page.locator("#delivery-summary")).to_contain_text("40 sent by up to 1 relay")
    expect(page.locator("#rate-chart rect.bar")).not_to_have_count(0)
    expect(page.locator("#wait-chart circle.p95")).not_to_have_count(0)
    delivery = page.request.get(f"{console}/api/overview").json()["delivery"]
    assert sum(slot["sent"] for slot in delivery["slots"]) == 40
    screenshot(page, "overview-delivery")


def _figures_sent(outbox: Outbox, figures: str) -> int:
    """Messages sent over the relay windows in the figures table (raw SQL)."""
    with outbox.engine.connect() as connection:
        return int(connection.execute(text(f"SELECT coalesce(sum(sent), 0) FROM {figures}")).scalar_one())
