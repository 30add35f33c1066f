"""The console's door: the guard before every request (session, CSRF token, role),
and the sign-in and sign-out pages."""

import logging
import time

from flask import Blueprint, abort, g, redirect, request, session, url_for
from flask.typing import ResponseReturnValue

from dispatcher.console.auth import (
    SIGN_IN_ATTEMPTS,
    SIGN_IN_WINDOW_S,
    csrf_ok,
    csrf_token,
    current_user,
    matching_user,
)
from dispatcher.console.views import render
from dispatcher.ratelimit import WindowLimiter
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

NOT_ACTIONS = ("console.signin", "console.signout")  # POSTs a viewer may send


def refusal(settings: Settings) -> ResponseReturnValue | None:
    """What answers this request instead of its page (a redirect to sign in, or a
    401 for the JSON endpoint), or None to go on; a refused POST raises 403."""
    if request.endpoint == "console.static":
        return None
    if request.method == "POST" and not csrf_ok(request.form.get("csrf")):
        abort(403, "The form's CSRF token is missing or wrong: reload the page.")
    g.console_user = user = current_user(settings)
    if user is None and request.endpoint != "console.signin":
        if request.endpoint == "console.throughput":
            return {"error": "sign in to the console"}, 401
        return redirect(url_for("console.signin"))
    acting = request.method == "POST" and request.endpoint not in NOT_ACTIONS
    if acting and not (user and user.may_act):
        abort(403, "Viewers may look, not act: sign in with an operator token.")
    return None


def sign_in(settings: Settings, limiter: WindowLimiter) -> ResponseReturnValue:
    """The sign-in form's POST: a right token starts a fresh session."""
    address = request.remote_addr or "unknown"
    if not limiter.allow(address):
        log.warning("console sign-in throttled", extra={"client": address})
        return render("signin", error="Too many attempts: wait a minute."), 429
    user = matching_user(request.form.get("token", ""), settings)
    if user is None:
        log.warning("console sign-in refused", extra={"client": address})
        return render("signin", error="That token does not open the console."), 401
    session.clear()  # a fresh session, and a fresh CSRF token, for the new user
    session.update(role=user.role, who=user.who, since=int(time.time()))
    log.info("console sign-in", extra={"who": user.who, "role": user.role})
    return redirect(url_for("console.overview"), 303)


def install(console: Blueprint, settings: Settings) -> None:
    limiter = WindowLimiter(SIGN_IN_ATTEMPTS, SIGN_IN_WINDOW_S)

    @console.before_request
    def guard() -> ResponseReturnValue | None:
        return refusal(settings)

    @console.context_processor
    def shared() -> dict[str, object]:
        user = g.get("console_user")
        return {"user": user, "csrf_token": csrf_token, "queue": settings.queue}

    @console.route("/signin", methods=["GET", "POST"])
    def signin() -> ResponseReturnValue:
        if g.console_user is not None:
            return redirect(url_for("console.overview"))
        if request.method == "GET":
            return render("signin")
        return sign_in(settings, limiter)

    @console.post("/signout")
    def signout() -> ResponseReturnValue:
        log.info("console sign-out", extra={"who": g.console_user.who})
        session.clear()
        return redirect(url_for("console.signin"), 303)
