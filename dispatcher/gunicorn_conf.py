"""gunicorn settings for `python -m dispatcher`, derived from the Settings."""

import os
import shutil
import tempfile
from typing import Any

from dispatcher.settings import from_env
from pipeline_core.logs import logging_config

_settings = from_env(os.environ)

bind = f"{_settings.host}:{_settings.port}"
# Threads: requests mostly wait on Redis or on `delay` pacing. Processes (HTTP_WORKERS)
# spread JSON and HTTP work over cores; on Kubernetes, prefer more replicas of one.
workers = _settings.http_workers
worker_class = "gthread"
threads = _settings.threads
# A paced dispatch may legitimately take max_pacing_s; let it finish on shutdown.
graceful_timeout = int(_settings.max_pacing_s) + 5
timeout = 30
keepalive = 5
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
