"""The console's pages and JSON API over the in-memory reference storage (HTTP, no browser).

Security rules are checked request by request: read-only without a token,
sign-in, CSRF, same origin, confirmations bound to their dry run, bounded
pages, escaped stored text, no secret rendered. Browser tests on real
storages live in the workspace's ``tests/console``.
"""

import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from pydantic import SecretStr
from spakky.outbox.common.config import OutboxConfig
from spakky.outbox.common.figures import COMMIT_TO_SEND_BUCKETS, RelayFigures
from spakky.outbox.common.fingerprint import failure_fingerprint
from spakky.outbox.common.message import OutboxMessage
from spakky.outbox.common.stats import KeyHead, MessageDetail, OutboxStats, RelayClaims
from spakky.outbox.console.app import create_console_app
from spakky.outbox.console.config import MAX_PAGE_SIZE, OutboxConsoleConfig
from spakky.outbox.console.security import SESSION_COOKIE
from spakky.outbox.console.views import PAYLOAD_SHOWN_BYTES
from spakky.outbox.ports.storage import IAsyncOutboxAdministration
from spakky.outbox.testing.memory import (
    AsyncInMemoryOutboxStorage,
    InMemoryOutboxState,
    InMemoryOutboxStorage,
)
from starlette.testclient import TestClient

TOKEN = "s3cret-console-token"
NO_ROUTE = "EventDeliveryRejectedError: no route for order {n}"
TIMEOUT = "TimeoutError: broker 10.0.0.5:5672 did not answer in 30 s"


def seed(state: InMemoryOutboxState, count: int, error: str | None = None, **fields: object) -> list[UUID]:
    """Save ``count`` messages; abandon them with ``error`` (``{n}`` numbered) when given."""
    storage = InMemoryOutboxStorage(state, OutboxConfig())
    messages = [
        OutboxMessage(
            uuid4(),
            str(fields.get("event_name", "OrderPlaced")),
            b'{"customer": "Ada Lovelace"}',
            {"spakky.auth.context_snapshot": "signed-snapshot-value"},
            datetime.now(UTC) - timedelta(minutes=5),
            partition_key=fields.get("key"),  # type: ignore[arg-type]
        )
        for _ in range(count)
    ]
    with state.transaction():
        for message in messages:
            storage.save(message)
    if error is not None:
        claimed = storage.fetch_pending(count, 5)
        assert len(claimed) == count
        for n, message in enumerate(claimed):
            storage.abandon(message.id, error.format(n=n))
    return [m.id for m in messages]


def abandoned_ids(state: InMemoryOutboxState) -> set[UUID]:
    """Backdoor: ids of the abandoned records."""
    return {r.message.id for r in state.records.values() if r.abandoned_at is not None}


@pytest.fixture
def state() -> InMemoryOutboxState:
    return InMemoryOutboxState()


def client_for(state: InMemoryOutboxState, token: str | None = TOKEN) -> TestClient:
    """A client of the console over ``state`` (read-only when ``token`` is None)."""
    config = OutboxConsoleConfig(token=None if token is None else SecretStr(token))
    app = create_console_app(AsyncInMemoryOutboxStorage(state, OutboxConfig()), config=config)
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture
def client(state: InMemoryOutboxState) -> Iterator[TestClient]:
    with client_for(state) as client:
        yield client


def sign_in(client: TestClient, name: str = "ada") -> str:
    """Sign in; return the CSRF token the pages carry."""
    response = client.post("/sign-in", data={"name": name, "token": TOKEN}, follow_redirects=False)
    assert response.status_code == 303
    return csrf_of(client.get("/abandoned").text)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def confirmation_of(html: str) -> str:
    match = re.search(r'name="confirmation" value="([^"]+)"', html)
    assert match, "the page has no confirmation"
    return match.group(1)


def test_console_overview_expect_counts_and_oldest_age(state: InMemoryOutboxState, client: TestClient) -> None:
    """The overview page and its API show the counts by state from the storage."""
    seed(state, 4)
    seed(state, 3, NO_ROUTE)
    page = client.get("/")
    assert page.status_code == 200
    assert re.search(r'id="count-pending">4<', page.text)
    assert re.search(r'id="count-abandoned">3<', page.text)
    document = client.get("/api/overview").json()
    assert (document["pending"], document["abandoned"], document["read_only"]) == (4, 3, False)
    assert document["oldest_pending_age_seconds"] >= 300


def test_console_failure_groups_expect_one_group_per_kind_with_count(
    state: InMemoryOutboxState, client: TestClient
) -> None:
    """Abandoned messages group by error type and normalised message, largest group first."""
    seed(state, 5, NO_ROUTE)
    seed(state, 2, TIMEOUT)
    document = client.get("/api/failure-groups").json()
    groups = document["groups"]
    assert [(g["error_type"], g["count"]) for g in groups] == [
        ("EventDeliveryRejectedError", 5),
        ("TimeoutError", 2),
    ]
    assert groups[0]["pattern"] == "no route for order <n>"
    assert groups[0]["fingerprint"] == failure_fingerprint("EventDeliveryRejectedError: no route for order 77")
    assert document["complete"] is True
    assert groups[0]["first_seen"] <= groups[0]["last_seen"]


def test_console_read_only_without_token_expect_every_action_refused(state: InMemoryOutboxState) -> None:
    """Without a token the console shows everything and refuses every action, forms and API alike."""
    seed(state, 2, NO_ROUTE)
    with client_for(state, token=None) as client:
        page = client.get("/abandoned")
        assert 'id="read-only"' in page.text and "Requeue" not in page.text
        refused = client.post("/actions/requeue/dry-run", data={"scope": "all"})
        assert refused.status_code == 403 and "read-only" in refused.text
        assert client.post("/sign-in", data={"token": ""}).status_code == 403
        api = client.post("/api/actions/requeue/dry-run", json={"scope": "all"}, headers={"Authorization": "Bearer "})
        assert api.status_code == 403 and "read-only" in api.json()["error"]
    assert len(abandoned_ids(state)) == 2


def test_console_sign_in_wrong_token_expect_refused_without_echo(client: TestClient) -> None:
    """A wrong token is refused, and neither it nor the real one is shown."""
    response = client.post("/sign-in", data={"name": "eve", "token": "guess-" + TOKEN[:4]})
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.cookies
    assert "guess-" not in response.text and TOKEN not in response.text


def test_console_action_without_csrf_expect_refused(state: InMemoryOutboxState, client: TestClient) -> None:
    """A signed-in form post without the CSRF token, or with another one, changes nothing."""
    seed(state, 2, NO_ROUTE)
    csrf = sign_in(client)
    for form in ({"scope": "all"}, {"scope": "all", "csrf": csrf[:-2] + "xx"}):
        response = client.post("/actions/requeue/dry-run", data=form)
        assert response.status_code == 403 and "CSRF" in response.text
    assert len(abandoned_ids(state)) == 2


def test_console_action_from_another_site_expect_refused(state: InMemoryOutboxState, client: TestClient) -> None:
    """A form posted from another site or origin is refused even with the right cookie and CSRF token."""
    seed(state, 1, NO_ROUTE)
    csrf = sign_in(client)
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}):
        response = client.post("/actions/requeue/dry-run", data={"scope": "all", "csrf": csrf}, headers=headers)
        assert response.status_code == 403
    assert len(abandoned_ids(state)) == 1


def test_console_requeue_group_expect_dry_run_then_only_that_group_requeued(
    state: InMemoryOutboxState, client: TestClient
) -> None:
    """A group's dry run counts it and changes nothing; confirming requeues exactly that group."""
    route = seed(state, 3, NO_ROUTE)
    timeouts = seed(state, 2, TIMEOUT)
    csrf = sign_in(client)
    fingerprint = failure_fingerprint(NO_ROUTE.format(n=0))
    preview = client.post(
        "/actions/requeue/dry-run", data={"scope": "group", "fingerprint": fingerprint, "csrf": csrf}
    )
    assert preview.status_code == 200
    assert re.search(r'id="dry-run-count">3<', preview.text)
    assert abandoned_ids(state) == {*route, *timeouts}
    done = client.post(
        "/actions/requeue", data={"confirmation": confirmation_of(preview.text), "csrf": csrf}
    )
    assert done.status_code == 200 and re.search(r'id="affected">3<', done.text)
    assert abandoned_ids(state) == set(timeouts)
    assert all(state.records[i].retry_count == 0 for i in route)
    entry = client.get("/api/audit").json()["entries"][0]
    assert (entry["action"], entry["scope"], entry["affected"]) == ("requeue", f"group {fingerprint}", 3)
    assert entry["actor"].startswith("ada (")


def test_console_requeue_one_and_selection_expect_just_those(state: InMemoryOutboxState, client: TestClient) -> None:
    """A per-row button requeues one message; the selection form requeues the checked ones."""
    ids = seed(state, 4, NO_ROUTE)
    csrf = sign_in(client)
    one = client.post("/actions/requeue/dry-run", data={"only": str(ids[0]), "id": str(ids[1]), "csrf": csrf})
    assert re.search(r'id="dry-run-count">1<', one.text)
    client.post("/actions/requeue", data={"confirmation": confirmation_of(one.text), "csrf": csrf})
    assert abandoned_ids(state) == set(ids[1:])
    chosen = client.post(
        "/actions/requeue/dry-run", data={"scope": "selection", "id": [str(ids[1]), str(ids[2])], "csrf": csrf}
    )
    assert re.search(r'id="dry-run-count">2<', chosen.text)
    client.post("/actions/requeue", data={"confirmation": confirmation_of(chosen.text), "csrf": csrf})
    assert abandoned_ids(state) == {ids[3]}


def test_console_confirmation_reused_elsewhere_expect_refused(state: InMemoryOutboxState, client: TestClient) -> None:
    """A confirmation works only for its action and its sign-in; a forged one never."""
    seed(state, 2, NO_ROUTE)
    csrf = sign_in(client)
    preview = client.post("/actions/requeue/dry-run", data={"scope": "all", "csrf": csrf})
    confirmation = confirmation_of(preview.text)
    other_action = client.post("/actions/purge-published", data={"confirmation": confirmation, "csrf": csrf})
    assert other_action.status_code == 403
    forged = client.post("/actions/requeue", data={"confirmation": confirmation[:-3] + "abc", "csrf": csrf})
    assert forged.status_code == 403
    with client_for(state) as other:
        other_csrf = sign_in(other, "bob")
        stolen = other.post("/actions/requeue", data={"confirmation": confirmation, "csrf": other_csrf})
        assert stolen.status_code == 403
    api = client.post(
        "/api/actions/requeue", json={"confirmation": confirmation}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert api.status_code == 403
    assert len(abandoned_ids(state)) == 2


def test_console_api_dry_run_then_act_expect_requeued_and_audited(state: InMemoryOutboxState, client: TestClient) -> None:
    """Scripts requeue with the bearer token: dry run, then its confirmation."""
    seed(state, 3, TIMEOUT)
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Outbox-Operator": "nightly-job"}
    assert client.post("/api/actions/requeue/dry-run", json={"scope": "all"}).status_code == 403
    dry = client.post("/api/actions/requeue/dry-run", json={"scope": "all"}, headers=auth).json()
    assert (dry["count"], dry["description"]) == (3, "all abandoned")
    assert len(abandoned_ids(state)) == 3
    done = client.post("/api/actions/requeue", json={"confirmation": dry["confirmation"]}, headers=auth).json()
    assert (done["entry"]["affected"], done["more"]) == (3, False)
    assert done["entry"]["actor"].startswith("nightly-job (")
    assert abandoned_ids(state) == set()


def test_console_purge_published_expect_dry_run_count_then_deleted(state: InMemoryOutboxState, client: TestClient) -> None:
    """Purging published messages before a cutoff: the dry run counts, the confirmation deletes."""
    ids = seed(state, 3)
    storage = InMemoryOutboxStorage(state, OutboxConfig())
    for message in storage.fetch_pending(3, 5):
        storage.mark_published(message.id)
    csrf = sign_in(client)
    cutoff = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    preview = client.post("/actions/purge-published/dry-run", data={"before": cutoff, "csrf": csrf})
    assert re.search(r'id="dry-run-count">3<', preview.text)
    assert all(i in state.records for i in ids)
    client.post("/actions/purge-published", data={"confirmation": confirmation_of(preview.text), "csrf": csrf})
    assert not any(i in state.records for i in ids)
    bad = client.post("/actions/purge-published/dry-run", data={"before": "last tuesday", "csrf": csrf})
    assert bad.status_code == 400 and "ISO timestamp" in bad.text


def test_console_page_size_above_bound_expect_400(client: TestClient) -> None:
    """A page or API call never returns more than the bound; asking for more is an error naming it."""
    for path in ("/abandoned", "/api/abandoned", "/api/failure-groups", "/api/audit"):
        response = client.get(path, params={"limit": MAX_PAGE_SIZE + 1})
        assert response.status_code == 400 and str(MAX_PAGE_SIZE) in response.text
        assert client.get(path, params={"limit": "ten"}).status_code == 400


def test_console_selection_above_bound_expect_400(state: InMemoryOutboxState, client: TestClient) -> None:
    """One selection holds at most a page of ids."""
    csrf = sign_in(client)
    ids = [str(uuid4()) for _ in range(MAX_PAGE_SIZE + 1)]
    response = client.post("/actions/requeue/dry-run", data={"scope": "selection", "id": ids, "csrf": csrf})
    assert response.status_code == 400 and str(MAX_PAGE_SIZE) in response.text


def test_console_stored_control_characters_expect_escaped(state: InMemoryOutboxState, client: TestClient) -> None:
    """Stored text is shown escaped: no markup, no terminal escape, no bidi override reaches the page."""
    seed(state, 1, "ValueError: bad \x1b[31mred\u202e <script>alert(1)</script>", event_name="Order<b>\x07", key="k\n1")
    html = client.get("/abandoned").text
    assert "<script>alert" not in html and "<b>" not in html
    assert "\x1b" not in html and "\u202e" not in html and "\x07" not in html
    assert r"\x1b[31mred\u202e" in html and r"Order&lt;b&gt;\x07" in html and r"k\x0a1" in html


def test_console_pages_expect_no_secret_rendered(state: InMemoryOutboxState, client: TestClient) -> None:
    """Neither the token nor stored headers or payloads appear on any page or API document."""
    seed(state, 2, NO_ROUTE)
    sign_in(client)
    for path in ("/", "/abandoned", "/audit", "/api/overview", "/api/abandoned", "/api/failure-groups"):
        body = client.get(path).text
        assert TOKEN not in body
        assert "signed-snapshot-value" not in body and "Ada Lovelace" not in body


def test_console_security_headers_expect_no_script_no_framing(client: TestClient) -> None:
    """Every response forbids scripts, framing and caching."""
    response = client.get("/")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def test_console_unknown_action_expect_404(client: TestClient) -> None:
    """An action the console does not know is a 404 naming it, escaped."""
    sign_in(client)
    response = client.post("/api/actions/drop-table", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404 and "drop-table" in response.json()["error"]


def test_console_keys_expect_blocked_keys_with_why_oldest_first_and_paged(
    state: InMemoryOutboxState, client: TestClient
) -> None:
    """Pending by key: one row per key, oldest head first, naming the claim or the retry that holds it; paged by the last head."""
    held = seed(state, 2, key="customer-2")
    retried = seed(state, 2, key="customer-3")
    free = seed(state, 2, key="customer-1")
    seed(state, 3)  # keyless: not on the page
    relay = InMemoryOutboxStorage(state, OutboxConfig())
    claimed = relay.fetch_pending(10, 5)
    assert {held[0], retried[0], free[0]} <= {m.id for m in claimed}
    relay.schedule_retry(retried[0], 3600, "TimeoutError: broker did not answer\x1b[31m")
    relay.release([m.id for m in claimed if m.id not in (held[0], retried[0])])
    document = client.get("/api/keys").json()
    rows = [(k["partition_key"], k["state"], k["message_id"]) for k in document["keys"]]
    assert rows == [
        ("customer-2", "claimed", str(held[0])),
        ("customer-3", "retrying", str(retried[0])),
        ("customer-1", "waiting", str(free[0])),
    ]
    claim, retry = document["keys"][0], document["keys"][1]
    assert claim["relay"] and claim["claim_until"] and "claim runs until" in claim["why"]
    assert retry["retry_at"] and retry["retry_count"] == 1 and "TimeoutError" in retry["why"]
    page = client.get("/keys")
    assert page.status_code == 200 and "customer-3" in page.text
    assert "\\x1b[31m" in page.text and "\x1b" not in page.text
    first = client.get("/api/keys?limit=2").json()
    assert first["next_after"] == str(retried[0])
    rest = client.get(f"/api/keys?limit=2&after={first['next_after']}").json()
    assert [k["partition_key"] for k in rest["keys"]] == ["customer-1"] and rest["next_after"] is None
    assert client.get("/api/keys?after=not-a-uuid").status_code == 400


def test_console_keys_storage_without_key_heads_expect_501(state: InMemoryOutboxState) -> None:
    """A storage written before key_heads gets a clear 501 on the page and the API, not a crash."""

    class OlderStorage(AsyncInMemoryOutboxStorage):
        async def key_heads(self, limit: int = 50, after: UUID | None = None) -> list[KeyHead]:
            return await IAsyncOutboxAdministration.key_heads(self, limit, after)

    app = create_console_app(OlderStorage(state, OutboxConfig()), config=OutboxConsoleConfig())
    with TestClient(app, base_url="http://127.0.0.1") as client:
        response = client.get("/api/keys")
        assert response.status_code == 501 and "key_heads" in response.json()["error"]
        assert client.get("/keys").status_code == 501


PERSONAL = b'{"customer": "Ada Lovelace", "password": "hunter2", "card": {"api_key": "k-123"}, "db": "postgresql://u:pw9@h/db"}'
SECRET_HEADERS = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "authorization": "Bearer abc-secret",
    "x-api-key": "zzz-secret",
    "spakky.auth.context_snapshot": "signed-snapshot-value",
    "note": "bell\x07 \u202eover",
}


def save_one(state: InMemoryOutboxState, payload: bytes = PERSONAL, headers: dict[str, str] | None = None) -> UUID:
    """Save one keyed message with ``payload`` and ``headers``; return its id."""
    message = OutboxMessage(
        uuid4(), "OrderPlaced", payload, SECRET_HEADERS if headers is None else headers,
        datetime.now(UTC) - timedelta(minutes=2), partition_key="customer-9",
    )
    with state.transaction():
        InMemoryOutboxStorage(state, OutboxConfig()).save(message)
    return message.id


def test_console_message_default_expect_fields_without_payload_or_headers(
    state: InMemoryOutboxState, client: TestClient
) -> None:
    """A message's page and API document give ids, key, attempts, reason and times; payload and headers stay hidden by default."""
    (abandoned,) = seed(state, 1, "ValueError: no route for order 7", key="customer-4")
    page = client.get(f"/messages/{abandoned}")
    assert page.status_code == 200
    assert str(abandoned) in page.text and "customer-4" in page.text and "no route for order 7" in page.text
    assert 'id="payload-hidden"' in page.text and "SHOW_PAYLOADS" in page.text
    assert "Ada Lovelace" not in page.text and "signed-snapshot-value" not in page.text
    document = client.get(f"/api/messages/{abandoned}").json()
    assert (document["id"], document["state"], document["partition_key"]) == (str(abandoned), "abandoned", "customer-4")
    assert document["retry_count"] == 0 and document["last_error"] == "ValueError: no route for order 7"
    assert document["created_at"] and document["abandoned_at"] and document["published_at"] is None
    assert (document["payloads_shown"], document["payload"], document["headers"]) == (False, None, None)
    assert document["payload_size"] == len(b'{"customer": "Ada Lovelace"}')
    assert "Ada Lovelace" not in client.get(f"/api/messages/{abandoned}").text


def test_console_message_states_expect_claim_and_retry_shown(state: InMemoryOutboxState, client: TestClient) -> None:
    """A claimed message names its relay and claim end; a retrying one its retry time; a published one when."""
    held, retried, sent = seed(state, 1, key="a")[0], seed(state, 1, key="b")[0], seed(state, 1, key="c")[0]
    relay = InMemoryOutboxStorage(state, OutboxConfig())
    assert {m.id for m in relay.fetch_pending(10, 5)} == {held, retried, sent}
    relay.schedule_retry(retried, 3600, "TimeoutError: broker did not answer")
    relay.mark_published(sent)
    claimed = client.get(f"/api/messages/{held}").json()
    assert claimed["state"] == "claimed" and claimed["relay"] and claimed["claim_until"]
    retrying = client.get(f"/api/messages/{retried}").json()
    assert retrying["state"] == "retrying" and retrying["retry_at"] and retrying["retry_count"] == 1
    published = client.get(f"/api/messages/{sent}").json()
    assert published["state"] == "published" and published["published_at"] and published["relay"] is None
    assert "claimed by relay" in client.get(f"/messages/{held}").text


def test_console_message_show_payloads_expect_secrets_redacted_and_escaped(state: InMemoryOutboxState) -> None:
    """With show_payloads on, payload and headers are shown with secret fields and headers redacted and control characters escaped."""
    message_id = save_one(state)
    config = OutboxConsoleConfig(token=SecretStr(TOKEN), show_payloads=True)
    app = create_console_app(AsyncInMemoryOutboxStorage(state, OutboxConfig()), config=config)
    secrets = ("hunter2", "k-123", "pw9", "abc-secret", "zzz-secret", "signed-snapshot-value", TOKEN)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        page = client.get(f"/messages/{message_id}").text
        assert "Ada Lovelace" in page and "4bf92f3577b34da6a3ce929d0e0e4736" in page
        assert not [s for s in secrets if s in page]
        assert r"bell\x07 \u202eover" in page and "\x07" not in page and "\u202e" not in page
        document = client.get(f"/api/messages/{message_id}").json()
        assert document["payloads_shown"] is True and document["payload"]["form"] == "json"
        assert document["headers"]["authorization"] == "***" and document["headers"]["x-api-key"] == "***"
        assert document["headers"]["traceparent"] == SECRET_HEADERS["traceparent"]
        shown = json.loads(document["payload"]["text"])
        assert shown["customer"] == "Ada Lovelace" and shown["password"] == "***" and shown["card"]["api_key"] == "***"
        assert "pw9" not in shown["db"]
        text = save_one(state, b"plain \x1b[31m text", {})
        html = client.get(f"/messages/{text}").text
        assert r"plain \x1b[31m text" in html and "\x1b" not in html and 'id="no-headers"' in html
        binary = client.get(f"/api/messages/{save_one(state, b'\xff\x00\x01', {})}").json()["payload"]
        assert binary == {"form": "hex", "text": "ff 00 01"}
        large = client.get(f"/api/messages/{save_one(state, b'x' * (PAYLOAD_SHOWN_BYTES + 1), {})}").json()
        assert large["payload"] == {"form": "too_large", "text": ""} and large["payload_size"] == PAYLOAD_SHOWN_BYTES + 1


def test_console_message_unknown_bad_or_unsupported_expect_404_400_501(state: InMemoryOutboxState, client: TestClient) -> None:
    """An unknown id is a 404, a malformed one a 400, a storage written before get_message a 501, on page and API."""
    unknown = uuid4()
    assert client.get(f"/api/messages/{unknown}").status_code == 404
    assert client.get(f"/messages/{unknown}").status_code == 404
    assert client.get("/api/messages/not-a-uuid").status_code == 400
    assert client.get("/messages/<script>").status_code in (400, 404)

    class OlderStorage(AsyncInMemoryOutboxStorage):
        async def get_message(self, message_id: UUID) -> MessageDetail | None:
            return await IAsyncOutboxAdministration.get_message(self, message_id)

    app = create_console_app(OlderStorage(state, OutboxConfig()), config=OutboxConsoleConfig())
    with TestClient(app, base_url="http://127.0.0.1") as older:
        response = older.get(f"/api/messages/{unknown}")
        assert response.status_code == 501 and "get_message" in response.json()["error"]
        assert older.get(f"/messages/{unknown}").status_code == 501


def test_console_abandoned_and_keys_pages_expect_links_to_message(state: InMemoryOutboxState, client: TestClient) -> None:
    """The abandoned and pending-by-key pages link each message to its page."""
    (abandoned,) = seed(state, 1, NO_ROUTE)
    (head,) = seed(state, 1, key="customer-1")
    assert f'href="http://127.0.0.1/messages/{abandoned}"' in client.get("/abandoned").text
    assert f'href="http://127.0.0.1/messages/{head}"' in client.get("/keys").text


def test_console_overview_relays_expect_each_relay_and_what_it_holds(state: InMemoryOutboxState, client: TestClient) -> None:
    """The overview names each relay holding claims, most held first, with how many messages and until when."""
    seed(state, 6)
    first, second = InMemoryOutboxStorage(state, OutboxConfig()), InMemoryOutboxStorage(state, OutboxConfig())
    assert len(first.fetch_pending(3, 5)) == 3 and len(second.fetch_pending(1, 5)) == 1
    owners = {str(r.claimed_by) for r in state.records.values() if r.claimed_by is not None}
    relays = client.get("/api/overview").json()["relays"]
    assert [r["held"] for r in relays] == [3, 1] and all(r["claims_until"] for r in relays)
    assert {r["relay"] for r in relays} == {o[:8] for o in owners}
    page = client.get("/").text
    assert 'id="relays"' in page and all(f'data-relay="{r["relay"]}"' in page for r in relays)
    assert not [o for o in owners if o in page]


def test_console_overview_storage_without_relay_claims_expect_said_not_failed(state: InMemoryOutboxState) -> None:
    """A storage that cannot tell which relay holds what still gets its overview, saying so (relays null)."""

    class OlderStorage(AsyncInMemoryOutboxStorage):
        async def relay_claims(self) -> list[RelayClaims]:
            return await IAsyncOutboxAdministration.relay_claims(self)

    seed(state, 2)
    app = create_console_app(OlderStorage(state, OutboxConfig()), config=OutboxConsoleConfig())
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/api/overview").json()["relays"] is None
        page = client.get("/")
        assert page.status_code == 200 and 'id="relays-unknown"' in page.text


def relay_window(relay: str, ended_at: datetime, sent: int, wait_bucket: int) -> RelayFigures:
    """A relay window of ``sent`` sends, every wait in bucket ``wait_bucket``."""
    waits = [0] * (len(COMMIT_TO_SEND_BUCKETS) + 1)
    waits[wait_bucket] = sent
    longest = COMMIT_TO_SEND_BUCKETS[wait_bucket]
    return RelayFigures(relay, ended_at - timedelta(seconds=10), ended_at, sent, 0, 0, 2, tuple(waits), longest)


def test_console_overview_delivery_expect_rate_and_waits_per_minute_from_two_relays(
    state: InMemoryOutboxState, client: TestClient
) -> None:
    """Windows of two relays ending in one minute add up in the overview's chart and API; older ones are left out."""
    now = datetime.now(UTC)
    state.write_relay_figures(relay_window("host-a/1", now - timedelta(minutes=90), 999, 0))
    state.write_relay_figures(relay_window("host-a/1", now - timedelta(seconds=1), 120, 2))
    state.write_relay_figures(relay_window("host-b/2", now - timedelta(seconds=2), 60, 4))
    document = client.get("/api/overview").json()["delivery"]
    assert (document["windows"], document["complete"], document["sent"], document["slot_seconds"]) == (2, True, 180, 60)
    assert len(document["slots"]) == 60
    last = document["slots"][-1]
    assert (last["sent"], last["relays"], last["sent_per_second"]) == (180, 2, 3.0)
    assert COMMIT_TO_SEND_BUCKETS[1] <= last["commit_to_send_p50_seconds"] <= COMMIT_TO_SEND_BUCKETS[2]
    assert COMMIT_TO_SEND_BUCKETS[3] <= last["commit_to_send_p95_seconds"] <= COMMIT_TO_SEND_BUCKETS[4]
    assert all(slot["sent"] == 0 and slot["commit_to_send_p50_seconds"] is None for slot in document["slots"][:-1])
    page = client.get("/").text
    assert 'id="rate-chart"' in page and page.count('class="bar"') == 1 and 'id="wait-chart"' in page
    assert 'id="delivery-summary"><strong>180</strong> sent by up to 2 relays' in page


def test_console_overview_delivery_none_or_empty_expect_no_figures_yet(state: InMemoryOutboxState) -> None:
    """Without the capability the API says null; with it but no window, an empty hour; both pages say no figures yet."""

    class NoFigures(IAsyncOutboxAdministration):
        """Administration only: forwards to the in-memory storage, keeps no figures."""

        def __init__(self) -> None:
            self.inner = AsyncInMemoryOutboxStorage(state, OutboxConfig())

        async def stats(self, timeout_seconds: float | None = None) -> OutboxStats:
            return await self.inner.stats(timeout_seconds)

        async def list_abandoned(self, limit: int = 100) -> list[OutboxMessage]:
            return await self.inner.list_abandoned(limit)

        async def requeue_abandoned(self, message_ids: Sequence[UUID] | None = None, limit: int = 1_000) -> int:
            return await self.inner.requeue_abandoned(message_ids, limit)

        async def purge_published(self, before: datetime | timedelta, limit: int = 10_000) -> int:
            return await self.inner.purge_published(before, limit)

    for storage, delivery in ((NoFigures(), None), (AsyncInMemoryOutboxStorage(state, OutboxConfig()), 0)):
        app = create_console_app(storage, config=OutboxConsoleConfig())
        with TestClient(app, base_url="http://127.0.0.1") as client:
            document = client.get("/api/overview").json()["delivery"]
            assert (document if delivery is None else document["windows"]) == delivery
            page = client.get("/")
            assert page.status_code == 200 and 'id="no-figures"' in page.text and 'id="rate-chart"' not in page.text
