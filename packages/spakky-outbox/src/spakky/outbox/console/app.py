"""The console as an ASGI app (Starlette): HTML pages for people, a JSON API for scripts.

`create_console_app` builds it over a storage; `outbox_console` over a started
Spakky application, for mounting inside a service
(``app.mount("/outbox", outbox_console(context))``); ``spakky-outbox console``
serves it on loopback. Reading needs nothing; acting needs the token: pages
sign in with it (a signed cookie) and post forms carrying a CSRF token, the
API sends it as ``Authorization: Bearer``. Every action is a dry run first,
then the confirmation that dry run issued.
"""

import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs
from uuid import UUID

from jinja2 import Environment, FileSystemLoader, select_autoescape
from spakky.core.pod.interfaces.application_context import IApplicationContext
from spakky.outbox.application.loop import StorageLoop
from spakky.outbox.cli import render
from spakky.outbox.console import views
from spakky.outbox.console.audit import IAsyncConsoleAuditLog, ProcessAuditLog
from spakky.outbox.console.config import (
    ACTION_BATCH,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    OutboxConsoleConfig,
)
from spakky.outbox.console.error import (
    ConsoleActionRefusedError,
    ConsoleNotFoundError,
    ConsoleRequestError,
    ConsoleStorageUnsupportedError,
)
from spakky.outbox.console.operations import (
    ConsoleAction,
    OutboxConsoleService,
    message_state,
)
from spakky.outbox.console.security import SESSION_COOKIE, ConsoleKeys, Session
from spakky.outbox.error import (
    AbstractSpakkyOutboxError,
    OutboxKeyHeadsUnsupportedError,
    OutboxMessageLookupUnsupportedError,
)
from spakky.outbox.ports.storage import IAsyncOutboxAdministration, IAsyncOutboxStorage
from spakky.outbox.relay.health import OutboxHealthCheck
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_HERE = Path(__file__).parent
type _Endpoint = Callable[[Request], Awaitable[Response]]
MAX_FORM_BYTES = 64 * 1024
"""Largest form or JSON body accepted (a full selection is far smaller)."""
API_ACTOR_HEADER = "x-outbox-operator"
"""Header naming the person behind an API call, for the audit log."""
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class _SecurityHeaders:
    """Adds the console's security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self._app(scope, receive, with_headers)


def _templates() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    environment.filters.update(
        printable=render.printable, when=views.when, seconds=views.seconds, why=views.why, relay=views.relay_id,
        points=views.points,
    )
    return environment


def _limit(request: Request) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return DEFAULT_PAGE_SIZE
    try:
        value = int(text)
    except ValueError:
        raise ConsoleRequestError(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}") from None
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise ConsoleRequestError(f"limit must be from 1 to {MAX_PAGE_SIZE}, got {value}")
    return value


def _after(request: Request) -> UUID | None:
    text = request.query_params.get("after")
    if not text:
        return None
    try:
        return UUID(text)
    except ValueError:
        raise ConsoleRequestError("after must be a message id (UUID), the last head of the previous page") from None


def _message_id(request: Request) -> UUID:
    try:
        return UUID(request.path_params["message_id"])
    except ValueError:
        raise ConsoleRequestError("a message id is a UUID") from None


def _action(request: Request) -> ConsoleAction:
    try:
        return ConsoleAction(request.path_params["action"])
    except ValueError:
        raise ConsoleNotFoundError(f"no action {render.printable(request.path_params['action'])!r}") from None


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ConsoleRequestError(f"the request body is larger than {MAX_FORM_BYTES} bytes")
    return body


async def _form(request: Request) -> dict[str, list[str]]:
    try:
        return parse_qs((await _body(request)).decode(), keep_blank_values=True, max_num_fields=MAX_PAGE_SIZE + 16)
    except (UnicodeDecodeError, ValueError):
        raise ConsoleRequestError("the form could not be read") from None


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class _Console:
    """The routes, over one `OutboxConsoleService`."""

    def __init__(self, service: OutboxConsoleService, config: OutboxConsoleConfig) -> None:
        self.service = service
        self.config = config
        token = config.token.get_secret_value() if config.token else None
        self.keys = ConsoleKeys(token, config.session_seconds)
        self.templates = _templates()

    # ------------------------------------------------------------------ pages
    def _page(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = self.keys.session(request.cookies.get(SESSION_COOKIE))
        html = self.templates.get_template(name).render(
            request=request,
            url_for=request.url_for,
            session=session,
            csrf=self.keys.csrf_token(session) if session else None,
            can_act=self.keys.can_act,
            target=self.service.target(),
            status=status,
            attempts=render.delivery_attempts,
            health_line=render.health_line,
            batch=ACTION_BATCH,
            chart_width=views.CHART_WIDTH,
            chart_height=views.CHART_HEIGHT,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    async def overview(self, request: Request) -> Response:
        overview = await self.service.overview()
        delivery = overview.delivery
        chart = views.delivery_chart(delivery) if delivery is not None and delivery.windows else None
        return self._page(request, "overview.html", overview=overview, chart=chart)

    async def abandoned(self, request: Request) -> Response:
        limit = _limit(request)
        group = request.query_params.get("group") or None
        groups = await self.service.failure_groups(limit)
        messages = await self.service.abandoned(limit, group)
        return self._page(
            request, "abandoned.html", groups=groups, messages=messages, group=group, limit=limit
        )

    async def pending_by_key(self, request: Request) -> Response:
        page = await self.service.key_heads(_limit(request), _after(request))
        return self._page(request, "keys.html", keys=page, limit=_limit(request), message_state=message_state)

    async def message(self, request: Request) -> Response:
        detail = await self.service.message(_message_id(request))
        message = detail.message
        shown = self.config.show_payloads
        return self._page(
            request,
            "message.html",
            detail=detail,
            m=message,
            state=message_state(detail).value,
            relay=views.relay(detail.claimed_by),
            show_payloads=shown,
            headers=views.shown_headers(message.headers) if shown else [],
            payload=views.shown_payload(message.payload) if shown else None,
            payload_size=len(message.payload),
        )

    async def audit(self, request: Request) -> Response:
        return self._page(request, "audit.html", entries=await self.service.audit(_limit(request)))

    async def sign_in_page(self, request: Request) -> Response:
        return self._page(request, "sign_in.html", problem=None)

    def _same_origin(self, request: Request) -> None:
        """Refuse a form posted from another site (before any CSRF token is looked at)."""
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise ConsoleActionRefusedError("the form was posted from another site")
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise ConsoleActionRefusedError("the form was posted from another origin")

    def _signed_in(self, request: Request, form: dict[str, list[str]]) -> Session:
        """The operator behind a form that acts: token set, signed in, same origin, CSRF token right."""
        if not self.keys.can_act:
            raise ConsoleActionRefusedError(
                "the console is read-only: set SPAKKY_OUTBOX_CONSOLE__TOKEN to allow actions"
            )
        self._same_origin(request)
        session = self.keys.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise ConsoleActionRefusedError("sign in with the console token first")
        if not self.keys.csrf_matches(session, (form.get("csrf") or [""])[0]):
            raise ConsoleActionRefusedError("the form's CSRF token is missing or wrong: reload the page")
        return session

    async def sign_in(self, request: Request) -> Response:
        if not self.keys.can_act:
            raise ConsoleActionRefusedError(
                "the console is read-only: set SPAKKY_OUTBOX_CONSOLE__TOKEN to allow actions"
            )
        self._same_origin(request)
        form = await _form(request)
        if not self.keys.token_matches((form.get("token") or [""])[0]):
            return self._page(request, "sign_in.html", status=403, problem="That is not the console token.")
        actor = render.printable((form.get("name") or [""])[0].strip()) or "operator"
        response = RedirectResponse(request.url_for("overview"), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.keys.new_session(actor),
            max_age=math.ceil(self.config.session_seconds),
            httponly=True,
            samesite="strict",
            secure=self.config.secure_cookies,
            path=request.scope.get("root_path") or "/",
        )
        return response

    async def sign_out(self, request: Request) -> Response:
        self._signed_in(request, await _form(request))
        response = RedirectResponse(request.url_for("overview"), status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=request.scope.get("root_path") or "/")
        return response

    @staticmethod
    def _scope_of(form: dict[str, list[str]]) -> dict[str, list[str]]:
        """A per-row button (``only=<id>``) stands for that one message."""
        if only := form.get("only"):
            return {"scope": ["message"], "id": only[:1]}
        return form

    async def dry_run(self, request: Request) -> Response:
        action = _action(request)
        form = await _form(request)
        session = self._signed_in(request, form)
        plan = await self.service.plan(action, self._scope_of(form))
        confirmation = self.keys.confirmation(session.nonce, action.value, plan.params)
        return self._page(request, "confirm.html", plan=plan, confirmation=confirmation)

    async def act(self, request: Request) -> Response:
        action = _action(request)
        form = await _form(request)
        session = self._signed_in(request, form)
        plan = self.keys.confirmed_plan(session.nonce, action.value, (form.get("confirmation") or [""])[0])
        outcome = await self.service.execute(action, plan, f"{session.actor} ({_client(request)})")
        return self._page(request, "done.html", outcome=outcome, plan=plan)

    # -------------------------------------------------------------------- API
    async def api_overview(self, request: Request) -> Response:
        return _json(views.overview_json(await self.service.overview(), self.service.max_pending_age_seconds, self.keys.can_act))

    async def api_health(self, request: Request) -> Response:
        health = await self.service.health()
        if health is None:
            raise ConsoleNotFoundError("this application has no OutboxHealthCheck")
        document = render.health_json(self.service.target(), health, self.service.max_pending_age_seconds)
        return _json(document, 200 if health.healthy else 503)

    async def api_abandoned(self, request: Request) -> Response:
        messages = await self.service.abandoned(_limit(request), request.query_params.get("group") or None)
        return _json(render.abandoned_json(self.service.target(), messages))

    async def api_groups(self, request: Request) -> Response:
        return _json(views.groups_json(await self.service.failure_groups(_limit(request))))

    async def api_keys(self, request: Request) -> Response:
        return _json(views.keys_json(await self.service.key_heads(_limit(request), _after(request))))

    async def api_message(self, request: Request) -> Response:
        detail = await self.service.message(_message_id(request))
        return _json(views.message_json(detail, self.config.show_payloads))

    async def api_audit(self, request: Request) -> Response:
        return _json({"entries": [dict(e.document()) for e in await self.service.audit(_limit(request))]})

    def _api_actor(self, request: Request) -> str:
        """The API caller, once its bearer token is checked."""
        if not self.keys.can_act:
            raise ConsoleActionRefusedError(
                "the console is read-only: set SPAKKY_OUTBOX_CONSOLE__TOKEN to allow actions"
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.keys.token_matches(given.strip()):
            raise ConsoleActionRefusedError("send the console token as 'Authorization: Bearer <token>'")
        name = render.printable(request.headers.get(API_ACTOR_HEADER, "").strip())[:64] or "api"
        return f"{name} ({_client(request)})"

    async def _api_form(self, request: Request) -> dict[str, list[str]]:
        """The JSON body as form fields: strings stay one value, lists of strings several."""
        try:
            document: object = json.loads(await _body(request) or b"{}")
        except ValueError:
            raise ConsoleRequestError("the body is not JSON") from None
        if not isinstance(document, dict):
            raise ConsoleRequestError("the body must be a JSON object")
        form: dict[str, list[str]] = {}
        for key, value in cast(dict[str, object], document).items():
            if isinstance(value, str):
                form[key] = [value]
            elif isinstance(value, list) and all(isinstance(v, str) for v in cast(list[object], value)):
                form[key] = cast(list[str], value)
            else:
                raise ConsoleRequestError(f"{render.printable(key)} must be a string or a list of strings")
        return form

    async def api_dry_run(self, request: Request) -> Response:
        action = _action(request)
        self._api_actor(request)
        plan = await self.service.plan(action, await self._api_form(request))
        return _json(
            {
                "action": action.value,
                "count": plan.count,
                "description": plan.description,
                "confirmation": self.keys.confirmation("api", action.value, plan.params),
            }
        )

    async def api_act(self, request: Request) -> Response:
        action = _action(request)
        actor = self._api_actor(request)
        form = await self._api_form(request)
        plan = self.keys.confirmed_plan("api", action.value, (form.get("confirmation") or [""])[0])
        outcome = await self.service.execute(action, plan, actor)
        return _json({"entry": dict(outcome.entry.document()), "more": outcome.more})

    # ----------------------------------------------------------------- errors
    async def error(self, request: Request, error: Exception) -> Response:
        status = _STATUS.get(type(error), 500)
        text = render.printable(str(error))
        if request.url.path.startswith(f"{request.scope.get('root_path', '')}/api/"):
            return _json({"error": text}, status)
        return self._page(request, "error.html", status=status, problem=text)


_STATUS: dict[type[Exception], int] = {
    ConsoleRequestError: 400,
    ConsoleActionRefusedError: 403,
    ConsoleNotFoundError: 404,
    OutboxKeyHeadsUnsupportedError: 501,
    OutboxMessageLookupUnsupportedError: 501,
}


def _json(document: dict[str, render.JsonValue], status: int = 200) -> Response:
    return Response(render.to_json(document), status_code=status, media_type="application/json")


def create_console_app(
    storage: IAsyncOutboxAdministration,
    health: OutboxHealthCheck | None = None,
    config: OutboxConsoleConfig | None = None,
    audit: IAsyncConsoleAuditLog | None = None,
    loop: StorageLoop | None = None,
) -> Starlette:
    """The console over ``storage`` as an ASGI app.

    Args:
        storage: The outbox to show and act on.
        health: The application's health check (the overview shows its verdict).
        config: Settings; default `OutboxConsoleConfig` from the environment.
        audit: Where actions are kept; default `ProcessAuditLog`.
        loop: Where storage calls run; default the loop that serves the request.
    """
    config = config or OutboxConsoleConfig()
    service = OutboxConsoleService(
        storage, audit or ProcessAuditLog(), health, config.max_pending_age_seconds, loop
    )
    console = _Console(service, config)
    routes: list[tuple[str, _Endpoint, list[str], str]] = [
        ("/", console.overview, ["GET"], "overview"),
        ("/abandoned", console.abandoned, ["GET"], "abandoned"),
        ("/keys", console.pending_by_key, ["GET"], "keys"),
        ("/messages/{message_id}", console.message, ["GET"], "message"),
        ("/audit", console.audit, ["GET"], "audit"),
        ("/sign-in", console.sign_in_page, ["GET"], "sign_in_page"),
        ("/sign-in", console.sign_in, ["POST"], "sign_in"),
        ("/sign-out", console.sign_out, ["POST"], "sign_out"),
        ("/actions/{action}/dry-run", console.dry_run, ["POST"], "dry_run"),
        ("/actions/{action}", console.act, ["POST"], "act"),
        ("/api/overview", console.api_overview, ["GET"], "api_overview"),
        ("/api/health", console.api_health, ["GET"], "api_health"),
        ("/api/abandoned", console.api_abandoned, ["GET"], "api_abandoned"),
        ("/api/failure-groups", console.api_groups, ["GET"], "api_groups"),
        ("/api/keys", console.api_keys, ["GET"], "api_keys"),
        ("/api/messages/{message_id}", console.api_message, ["GET"], "api_message"),
        ("/api/audit", console.api_audit, ["GET"], "api_audit"),
        ("/api/actions/{action}/dry-run", console.api_dry_run, ["POST"], "api_dry_run"),
        ("/api/actions/{action}", console.api_act, ["POST"], "api_act"),
    ]
    return Starlette(
        routes=[
            *(Route(path, fn, methods=methods, name=name) for path, fn, methods, name in routes),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ],
        middleware=[Middleware(_SecurityHeaders)],
        exception_handlers={AbstractSpakkyOutboxError: console.error, Exception: console.error},
    )


def outbox_console(context: IApplicationContext, config: OutboxConsoleConfig | None = None) -> Starlette:
    """The console over a started Spakky application's outbox, for mounting in a service.

    Storage calls run on the application's own event loop, where its
    connection pools live.

    Raises:
        ConsoleStorageUnsupportedError: The application has no storage with the
            administration capability.
    """
    storage = context.get(IAsyncOutboxStorage)  # type: ignore[type-abstract]
    if not isinstance(storage, IAsyncOutboxAdministration):
        raise ConsoleStorageUnsupportedError(type(storage).__name__)
    return create_console_app(
        storage, context.get(OutboxHealthCheck), config, loop=StorageLoop.of(context)
    )

