"""gunicorn settings for `python -m dispatcher`, derived from the Settings."""

import os
import shutil
import tempfile
import warnings
from typing import Any

from dispatcher.settings import from_env, graceful_timeout_s
from pipeline_core.logs import logging_config

_settings = from_env(os.environ)
_door = _settings.front_door

bind = f"{_settings.host}:{_settings.port}"
# gevent: each connection is a greenlet, so slow or idle clients cost a little memory,
# never one of a few threads, and /healthz answers beside them (docs/security.md).
# Requests mostly wait on Redis or on `delay` pacing. Processes (HTTP_WORKERS) spread
# JSON and HTTP work over cores; on Kubernetes, prefer more replicas of one.
workers = _settings.http_workers
worker_class = "gevent"
worker_connections = _door.worker_connections  # past it, new ones wait to be accepted
# The async workers read every request's head inside gevent.Timeout(keepalive)
# (gunicorn/workers/base_async.py, ggevent.py timeout_ctx): an absolute deadline for the
# head, silent connections included, which is also how long a kept-alive connection
# waits for its next request. Past it the connection closes without an answer.
keepalive = _door.header_timeout_s
# gunicorn leaves a connection's socket without a timeout (ggevent.py setblocking(1)):
# from its first request on, a read or write that makes no progress for this long
# fails. Longer than the head deadline, which must fire first (it closes quietly).
IDLE_SOCKET_S = _door.header_timeout_s + _door.body_timeout_s
# Requests in progress may finish on shutdown; a paced one is the longest.
graceful_timeout = graceful_timeout_s(_settings)
timeout = 30  # a worker whose loop does not check in for this long is replaced
# gunicorn imports ssl before its worker patches the standard library, so gevent warns
# at every worker start. What it names as bound before the patch is redis.asyncio's
# (unused here); redis-py's client looks ssl up when it connects, and rediss:// under
# this worker is tested (tests/test_security.py). The warning is inherited by workers.
warnings.filterwarnings("ignore", message="Monkey-patching ssl after ssl")
logconfig_dict = logging_config(_settings.log_level, "dispatcher")
accesslog = None
proc_name = "dispatcher"
control_socket_disable = True  # no runtime control surface (and no write to $HOME)

if workers > 1:
    # prometheus_client's multiprocess mode: each worker writes its samples to files
    # here, and /metrics sums them. Set before any worker imports prometheus_client.
    os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR",
        os.path.join(tempfile.gettempdir(), "dispatcher-metrics"),
    )


def on_starting(server: Any) -> None:
    """Wipe the samples of an earlier run: a counter must start from zero."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's live gauges must not count any more."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess  # after the variable is set

        multiprocess.mark_process_dead(worker.pid)


def pre_request(worker: Any, req: Any) -> None:
    """Bound the connection's later reads and writes, and let the app close it after
    refusing a request whose body it did not read: PEP 3333 forbids an application's
    Connection header (gunicorn drops it), so the app calls `close_connection` on its
    `wsgi.input`, which is this request's body (dispatcher/body.py)."""
    req.unreader.sock.settimeout(IDLE_SOCKET_S)
    req.body.close_connection = req.force_close
