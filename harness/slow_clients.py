"""Slow and idle clients against an HTTP server, for the front door's test and bench:
slowloris (a header line every few seconds, never the end of the head), silent
connections (nothing sent) and slow bodies (a whole head, then a byte every few
seconds). Each connection the server closes is opened again, as an attacker would, for
as long as the crowd runs; how long each one lived is recorded."""

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

KINDS = ("slowloris", "silent", "slow_body")


@dataclass
class Crowd:
    """How many connections of each kind to hold open, and the pace of their bytes."""

    slowloris: int = 0
    silent: int = 0
    slow_body: int = 0
    every_s: float = 2.0
    token: str | None = None  # sent by slow bodies, so the server does read them
    body_bytes: int = 1000  # what a slow body announces; it never sends that much


@dataclass
class _Connection:
    kind: str
    sock: socket.socket
    opened_s: float
    next_send_s: float
    sent: int = 0


@dataclass
class SlowClients:
    """`with SlowClients(port, Crowd(...)) as crowd:` holds the crowd open; afterwards
    `lifetimes(kind)` says how long each connection the server closed had lived."""

    port: int
    crowd: Crowd
    closed: dict[str, list[float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "SlowClients":
        self.closed = {kind: [] for kind in KINDS}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def lifetimes(self, kind: str) -> list[float]:
        return list(self.closed[kind])

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        counts = {"slowloris": self.crowd.slowloris, "silent": self.crowd.silent}
        counts["slow_body"] = self.crowd.slow_body
        for kind, count in counts.items():
            for _ in range(count):
                self._open(selector, kind)
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.05):
                self._read(selector, key.data)
            now = time.monotonic()
            for key in list(selector.get_map().values()):
                if key.data.next_send_s <= now:
                    self._send(selector, key.data, now)
        for key in list(selector.get_map().values()):
            key.data.sock.close()
        selector.close()

    def _open(self, selector: selectors.BaseSelector, kind: str) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setblocking(False)
        now = time.monotonic()
        first_s = now if kind != "silent" else float("inf")
        selector.register(
            sock, selectors.EVENT_READ, _Connection(kind, sock, now, first_s)
        )

    def _read(self, selector: selectors.BaseSelector, conn: _Connection) -> None:
        """The server answered (a 408 or 413, say) or closed: closed is what counts."""
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._closed(selector, conn)

    def _send(
        self, selector: selectors.BaseSelector, conn: _Connection, now: float
    ) -> None:
        try:
            conn.sock.send(self._next_bytes(conn))
        except BlockingIOError:
            pass
        except OSError:
            self._closed(selector, conn)
            return
        conn.sent += 1
        conn.next_send_s = now + self.crowd.every_s

    def _next_bytes(self, conn: _Connection) -> bytes:
        if conn.kind == "slowloris":
            if conn.sent == 0:
                return b"GET /healthz HTTP/1.1\r\nHost: slow\r\n"
            return b"X-Slow-%d: x\r\n" % conn.sent
        if conn.sent:
            return b" "  # whitespace: a JSON body that is never finished
        auth = (
            f"Authorization: Bearer {self.crowd.token}\r\n" if self.crowd.token else ""
        )
        head = "POST /dispatch HTTP/1.1\r\nHost: slow\r\n" + auth
        head += "Content-Type: application/json\r\n"
        return (head + f"Content-Length: {self.crowd.body_bytes}\r\n\r\n").encode()

    def _closed(self, selector: selectors.BaseSelector, conn: _Connection) -> None:
        selector.unregister(conn.sock)
        conn.sock.close()
        self.closed[conn.kind].append(time.monotonic() - conn.opened_s)
        if not self._stop.is_set():
            self._open(selector, conn.kind)
