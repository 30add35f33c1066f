"""A /dispatch body, read whole within an absolute deadline and a size cap, holding a
share of what bodies one process may hold at once; the console's forms within the same
deadline; and the connection closed after an answer that left a body unread, so a slow
one is never read to its end."""

import threading

import gevent
from flask import g, request

from dispatcher.errors import BusyError, InvalidPayloadError

# gunicorn's read(n) waits for all n bytes, so what a stalled body has sent but not yet
# handed over (at most this) is held uncharged: small, since connections are many.
CHUNK_BYTES = 16 * 1024
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")  # read whole


class Allowance:
    """Up to `limit` units held at once (bytes of bodies, paced requests)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self, amount: int = 1) -> bool:
        """Hold `amount` more if it fits; whether it did."""
        with self._lock:
            if self.held + amount > self.limit:
                return False
            self.held += amount
            return True

    def give(self, amount: int = 1) -> None:
        with self._lock:
            self.held -= amount


def read_body(budget: Allowance, limit: int, timeout_s: float) -> bytearray:
    """The request's body: 413 past `limit` bytes (a chunked one too: it has no length
    to check first, so one byte more is read), 408 when it has not all arrived within
    `timeout_s`, 503 when the bodies the process holds would pass `budget`. A body is
    charged as its bytes arrive, not as announced, so holding the budget takes real
    bytes; the charge is given back when the request ends (give_back)."""
    if (request.content_length or 0) > limit:
        raise InvalidPayloadError("body", f"is over {limit} bytes", 413)
    body = bytearray()
    late = InvalidPayloadError("body", f"did not arrive within {timeout_s:g} s", 408)
    # Under gunicorn's gevent worker every socket read yields to the loop, so the
    # timeout interrupts a read that waits as well as a body that trickles.
    with gevent.Timeout(timeout_s, late):
        while chunk := request.stream.read(min(CHUNK_BYTES, limit + 1 - len(body))):
            _hold(budget, len(chunk))
            body += chunk
            # Asking for the byte past the limit is what refuses a chunked body (the
            # old get_data() read exactly the limit and stopped). werkzeug's stream
            # raises the same 413 itself when MAX_CONTENT_LENGTH is set, as it is.
            if len(body) > limit:
                raise InvalidPayloadError("body", f"is over {limit} bytes", 413)
    g.body_read = True
    return body


def give_back(budget: Allowance) -> None:
    """Return what this request held of the budget (at its end, however it ended)."""
    budget.give(g.pop("body_held", 0))


def parse_form_in_time(timeout_s: float) -> None:
    """A console request's form, parsed within the body deadline before its guard or
    view reads it (werkzeug bounds a form's memory; without this, a body trickled to
    the sign-in form would hold its connection for as long as it lasts)."""
    if request.blueprint != "console" or request.mimetype not in FORMS:
        return
    late = InvalidPayloadError("body", f"did not arrive within {timeout_s:g} s", 408)
    with gevent.Timeout(timeout_s, late):
        _ = request.form  # parsed now; the guard and the view read the cached form
    g.body_read = True


def close_if_body_unread() -> None:
    """After an answer given before the body was read whole (401, 408, 413, 415, 503),
    have gunicorn close the connection rather than read the rest of it."""
    if g.get("body_read") or not _has_body():
        return
    # gunicorn_conf.pre_request put it there; absent elsewhere (the test client).
    close = getattr(request.environ.get("wsgi.input"), "close_connection", None)
    if callable(close):
        close()


def _hold(budget: Allowance, amount: int) -> None:
    if not budget.take(amount):
        raise BusyError("the process holds as many request bodies as it may")
    g.body_held = g.get("body_held", 0) + amount


def _has_body() -> bool:
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return bool(request.content_length) or chunked
