"""gunicorn settings for `python -m dispatcher`, derived from the Settings."""

import os

from dispatcher.logs import logging_config
from dispatcher.settings import from_env

_settings = from_env(os.environ)

bind = f"{_settings.host}:{_settings.port}"
# One process with threads: requests mostly wait on Redis or on `delay` pacing, and one
# process keeps the Prometheus registry simple. Scale out with replicas.
workers = 1
worker_class = "gthread"
threads = _settings.threads
# A paced dispatch may legitimately take max_pacing_s; let it finish on shutdown.
graceful_timeout = int(_settings.max_pacing_s) + 5
timeout = 30
keepalive = 5
logconfig_dict = logging_config(_settings.log_level)
accesslog = None
proc_name = "dispatcher"
control_socket_disable = True  # no runtime control surface (and no write to $HOME)
