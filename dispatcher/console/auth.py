"""Who is using the console: tokens and their roles (operator or viewer), the signed
session cookie, CSRF tokens, and the per-address limit on sign-in attempts. A token
is never stored or logged: its fingerprint (8 hex digits of its SHA-256) is."""

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, request, session
from flask.sessions import SecureCookieSessionInterface

from dispatcher.settings import Settings

log = logging.getLogger(__name__)

OPERATOR, VIEWER, ANONYMOUS = "operator", "viewer", "anonymous (loopback)"
SESSION_MAX_S = 8 * 3600  # a session ends this long after sign-in, whatever happens
SIGN_IN_ATTEMPTS, SIGN_IN_WINDOW_S = 10, 60.0  # per client address, per process


@dataclass(frozen=True, slots=True)
class User:
    role: str  # OPERATOR or VIEWER
    who: str  # the token's fingerprint, or ANONYMOUS

    @property
    def may_act(self) -> bool:
        return self.role == OPERATOR


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def who_may_sign_in(settings: Settings) -> dict[str, Any]:
    """For the start-up log: fingerprints of the tokens, never the tokens."""
    return {
        "anonymous": settings.allow_anonymous,
        "operators": [fingerprint(t) for t in settings.operator_tokens],
        "viewers": [fingerprint(t) for t in settings.viewer_tokens],
    }


class ConsoleSessionInterface(SecureCookieSessionInterface):  # Flask's extension point
    """Flask's signed-cookie session whose cookie is Secure when the request came
    over HTTPS, directly or through a proxy that says so (X-Forwarded-Proto)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        proxied = request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        return request.is_secure or proxied


def configure_session(app: Flask, secret_key: str) -> None:
    app.secret_key = secret_key
    app.session_interface = ConsoleSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="console_session",
        SESSION_COOKIE_PATH="/ui/",  # never sent to the API
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=SESSION_MAX_S),
    )


def matching_user(presented: str, settings: Settings) -> User | None:
    """The user a token signs in as. Every token is compared, matched or not, so the
    time taken does not tell how close a guess was."""
    found = None
    for role, tokens in (
        (OPERATOR, settings.operator_tokens),
        (VIEWER, settings.viewer_tokens),
    ):
        for token in tokens:
            if hmac.compare_digest(presented.encode(), token.encode()):
                found = User(role, fingerprint(token))
    return found


def current_user(settings: Settings) -> User | None:
    """The signed-in user, if the session is recent and its token is still listed."""
    if settings.allow_anonymous:
        return User(OPERATOR, ANONYMOUS)
    role, who, since = session.get("role"), session.get("who"), session.get("since")
    if not isinstance(since, int) or time.time() - since > SESSION_MAX_S:
        return None
    tokens = {OPERATOR: settings.operator_tokens, VIEWER: settings.viewer_tokens}
    if who not in {fingerprint(token) for token in tokens.get(str(role), ())}:
        return None
    return User(str(role), str(who))


def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(presented: str | None) -> bool:
    expected = session.get("csrf")
    if not isinstance(expected, str) or presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
