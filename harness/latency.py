"""A TCP proxy that adds a fixed one-way delay in each direction: a slow network
between a client and Redis. (netem would do this in the kernel, but the kernels of our
machines lack sch_netem; this is real TCP through a real delay, in user space.)

Every chunk read is forwarded `delay_s` after it arrived, in order, so pipelined
traffic is delayed once, not once per chunk queued behind another."""

import collections
import contextlib
import socket
import threading
import time

from harness.processes import free_port


class LatencyProxy:
    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port, self.delay_s = target_port, delay_s
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "LatencyProxy":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        for connection in self._sockets:
            connection.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                self._pipe(source, sink)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        chunks: collections.deque[tuple[float, bytes]] = collections.deque()
        ready = threading.Condition()

        def read() -> None:
            while data := _recv(source):
                with ready:
                    chunks.append((time.monotonic() + self.delay_s, data))
                    ready.notify()
            with ready:
                chunks.append((0.0, b""))  # the end, in order
                ready.notify()

        def write() -> None:
            while True:
                with ready:
                    ready.wait_for(lambda: bool(chunks))
                    due, data = chunks.popleft()
                if not data:
                    _close(sink)
                    return
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    sink.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()


def _recv(source: socket.socket) -> bytes:
    try:
        return source.recv(65536)
    except OSError:
        return b""


def _close(sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
