"""The consumer's HTTP endpoint on METRICS_PORT: /metrics for Prometheus, and /healthz
for the liveness probe. /healthz fails once the worker loop has made no progress for
too long (a task hung past TASK_TIMEOUT_S, a deadlock): Kubernetes then restarts it."""

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def serve(
    port: int,
    registry: CollectorRegistry,
    last_progress_s: Callable[[], float],
    stuck_after_s: float,
) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; returns the server (to shut it down)."""

    class Handler(BaseHTTPRequestHandler):  # http.server's extension point
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

    server = ThreadingHTTPServer(
        ("0.0.0.0", port), Handler
    )  # reached from outside the pod
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
