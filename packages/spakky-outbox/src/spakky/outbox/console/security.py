"""Sign-in, CSRF and confirmation tokens of the console, all signed with a key derived from the token.

Nothing is kept on the server: a sign-in is a signed cookie, so several
workers of one service share it, and changing the token ends every sign-in.
Every form that acts carries a CSRF token bound to the sign-in; every action
carries the confirmation its dry run issued, bound to the same sign-in (or to
the API token) and valid for `CONFIRMATION_SECONDS`.
"""

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import cast

from spakky.outbox.console.error import ConsoleActionRefusedError

SESSION_COOKIE = "spakky_outbox_console"
CONFIRMATION_SECONDS = 300.0
"""How long a dry run's confirmation may be used."""
ACTOR_LENGTH = 64
"""Longest operator name kept in the audit log."""

type Claims = dict[str, str | int | float | list[str] | None]


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A signed-in operator."""

    actor: str
    """Name the operator gave (for the audit log)."""
    nonce: str
    """Random id of this sign-in; CSRF and confirmation tokens are bound to it."""


class ConsoleKeys:
    """Checks the action token and signs what the console hands to browsers and scripts."""

    def __init__(self, token: str | None, session_seconds: float) -> None:
        """Derive the signing key from ``token``; None (read-only) signs nothing."""
        self._token = token.encode() if token else None
        self._key = (
            hashlib.sha256(b"spakky-outbox-console\0" + self._token).digest()
            if self._token
            else None
        )
        self._session_seconds = session_seconds

    @property
    def can_act(self) -> bool:
        """Whether a token is set (without one every action is refused)."""
        return self._key is not None

    def token_matches(self, given: str) -> bool:
        """Compare ``given`` with the token in constant time."""
        return self._token is not None and hmac.compare_digest(given.encode(), self._token)

    def _mac(self, purpose: str, body: str) -> str:
        if self._key is None:
            raise ConsoleActionRefusedError("the console is read-only")
        return _encode(hmac.new(self._key, f"{purpose}\0{body}".encode(), hashlib.sha256).digest())

    def _sign(self, purpose: str, claims: Claims, seconds: float) -> str:
        body = _encode(json.dumps(claims | {"exp": time.time() + seconds}).encode())
        return f"{body}.{self._mac(purpose, body)}"

    def _verify(self, purpose: str, value: str) -> Claims | None:
        if self._key is None or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(purpose, body)):
            return None
        try:
            claims = cast(Claims, json.loads(_decode(body)))
        except ValueError:
            return None
        expiry = claims.get("exp")
        if not isinstance(expiry, int | float) or expiry < time.time():
            return None
        return claims

    def new_session(self, actor: str) -> str:
        """A signed sign-in cookie value for ``actor``."""
        return self._sign(
            "session",
            {"actor": actor[:ACTOR_LENGTH], "nonce": secrets.token_urlsafe(16)},
            self._session_seconds,
        )

    def session(self, cookie: str | None) -> Session | None:
        """The sign-in a cookie value stands for, or None (absent, forged, expired)."""
        claims = None if cookie is None else self._verify("session", cookie)
        if claims is None:
            return None
        return Session(actor=str(claims["actor"]), nonce=str(claims["nonce"]))

    def csrf_token(self, session: Session) -> str:
        """The CSRF token every form of ``session`` carries."""
        return self._mac("csrf", session.nonce)

    def csrf_matches(self, session: Session, given: str) -> bool:
        """Whether ``given`` is ``session``'s CSRF token."""
        return hmac.compare_digest(given, self.csrf_token(session))

    def confirmation(self, binding: str, action: str, plan: Claims) -> str:
        """A confirmation of ``plan`` for ``action``, usable by ``binding`` (a session nonce or ``api``)."""
        return self._sign(
            "confirm", {"binding": binding, "action": action, "plan": json.dumps(plan)}, CONFIRMATION_SECONDS
        )

    def confirmed_plan(self, binding: str, action: str, value: str) -> Claims:
        """The plan ``value`` confirms for ``binding`` and ``action``.

        Raises:
            ConsoleActionRefusedError: It is forged, expired, for another
                action, or issued to someone else.
        """
        claims = self._verify("confirm", value)
        if claims is None or claims.get("binding") != binding or claims.get("action") != action:
            raise ConsoleActionRefusedError(
                "the confirmation is missing, expired or not yours: run the dry run again"
            )
        return cast(Claims, json.loads(str(claims["plan"])))
