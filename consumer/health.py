"""The consumer's HTTP endpoint on METRICS_PORT: /metrics for Prometheus, and /healthz
for the liveness probe. /healthz fails once the worker loop has made no progress for
too long (a task hung past TASK_TIMEOUT_S, a deadlock): Kubernetes then restarts it."""

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

# A connection that sends nothing (or too slowly) is dropped after this: a request
# needs one line and a few headers. Each connection has its own thread, so a silent one
# never delays /healthz; the timeout bounds how long it holds that thread.
READ_TIMEOUT_S = 5.0
LISTEN_BACKLOG = 1024


def serve(
    address: tuple[str, int],
    registry: CollectorRegistry,
    last_progress_s: Callable[[], float],
    stuck_after_s: float,
) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread on (METRICS_HOST, METRICS_PORT); returns
    the server (to shut it down)."""

    class Handler(BaseHTTPRequestHandler):  # http.server's extension point
        timeout = (
            READ_TIMEOUT_S  # socket timeout of each connection (StreamRequestHandler)
        )

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif self.path == "/healthz":
                idle_s = time.monotonic() - last_progress_s()
                status = 200 if idle_s < stuck_after_s else 503
                verdict = "ok" if status == 200 else "stuck"
                body = json.dumps({"status": verdict, "idle_s": round(idle_s, 1)})
                self._answer(status, "application/json", body.encode())
            else:
                self._answer(404, "application/json", b'{"error": "not found"}')

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would flood the logs

    server = ThreadingHTTPServer(address, Handler, bind_and_activate=False)
    server.daemon_threads = True  # a connection being read never holds up an exit
    # socketserver listens with a backlog of 5: past that, new connections (a probe)
    # wait for SYN retransmits, seconds, while slow ones are being accepted.
    server.request_queue_size = LISTEN_BACKLOG
    try:
        server.server_bind()
        server.server_activate()
    except OSError:
        server.server_close()
        raise
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
