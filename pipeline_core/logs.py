"""JSON-lines logs on stdout, one shape for every process: time, level, logger,
message, the service (and, for consumers, the consumer's name), and the `extra` facts.
"""

import logging.config
from typing import Any


def logging_config(level: str, service: str, **static: str) -> dict[str, Any]:
    """dictConfig form (gunicorn takes it too): one JSON formatter for our loggers and
    gunicorn's, whose access log stays quiet below WARNING."""
    stdout = {"level": level, "handlers": ["stdout"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "{levelname}{name}{message}",
                "style": "{",
                "timestamp": "time",  # ISO 8601, UTC, to the microsecond
                "rename_fields": {"levelname": "level", "name": "logger"},
                "static_fields": {"service": service, **static},
            }
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": stdout,
            "gunicorn.access": {**stdout, "level": "WARNING"},
        },
    }


def configure_logging(level: str, service: str, **static: str) -> None:
    logging.config.dictConfig(logging_config(level, service, **static))
