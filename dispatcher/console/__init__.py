"""The operators' web console under /ui/ on the dispatcher's own port (docs/console.md).

install_console() sets up the signed session cookie and registers the blueprint; it
stays off, saying so in the log, without a secret key outside loopback or without
anyone who may sign in. start_sampler() keeps the chart's history in Redis.
"""

import logging
import secrets
import threading

from flask import Blueprint, Flask, Response, request

from dispatcher.console import actions, auth, pages, signin, tasks, views
from dispatcher.console.stats import Sampler
from dispatcher.settings import LOOPBACK, Settings
from pipeline_core.connection import Client
from pipeline_core.wire import printable

log = logging.getLogger(__name__)

# CSP without inline script or style: every script and stylesheet is a file of ours.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def off_reason(settings: Settings) -> str | None:
    """Why the console stays off, or None when it is on."""
    if settings.console_secret_key is None and settings.host not in LOOPBACK:
        return "no CONSOLE_SECRET_KEY(_FILE) to sign sessions, and HOST is not loopback"
    if not (
        settings.allow_anonymous or settings.operator_tokens or settings.viewer_tokens
    ):
        return "no OPERATOR_TOKENS or VIEWER_TOKENS: nobody could sign in"
    return None


def install_console(app: Flask, settings: Settings, client: Client) -> bool:
    """Serve the console under /ui/ unless it must stay off; True if it is on."""
    reason = off_reason(settings)
    if reason is not None:
        log.warning("console off", extra={"reason": reason})
        return False
    # On loopback without a key, a random one: sessions last as long as the process.
    auth.configure_session(app, settings.console_secret_key or secrets.token_hex(32))
    console = Blueprint(
        "console", __name__, url_prefix="/ui",
        template_folder="templates", static_folder="static",
    )  # fmt: skip
    views.install(console)
    signin.install(console, settings)
    pages.install(console, settings, client)
    actions.install(console, settings, client)
    tasks.install(console, settings, client)
    app.register_blueprint(console)
    # Every string a page shows passes here: undecodable bytes from another producer
    # become backslash escapes instead of failing the page's encoding.
    app.jinja_env.finalize = _printable
    app.after_request(_security_headers)  # app-wide: 404s under /ui/ get them too
    log.info("console on", extra=auth.who_may_sign_in(settings))
    return True


def start_sampler(settings: Settings, client: Client) -> threading.Thread | None:
    """The thread that samples throughput into Redis, when the console is on."""
    if off_reason(settings) is not None:
        return None
    sampler = Sampler(client, settings.queue)
    thread = threading.Thread(target=sampler.run, name="console-sampler", daemon=True)
    thread.start()
    return thread


def _security_headers(response: Response) -> Response:
    if request.path == "/ui" or request.path.startswith("/ui/"):
        response.headers.update(HEADERS)
        if request.endpoint != "console.static":
            response.headers["Cache-Control"] = "no-store"
    return response


def _printable(value: object) -> object:
    """A string as printable text, of its own type: markup Jinja made stays markup."""
    return type(value)(printable(value)) if isinstance(value, str) else value
