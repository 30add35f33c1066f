"""JSON-lines logging for the dispatcher, in the dictConfig form gunicorn also takes."""

from typing import Any


def logging_config(level: str) -> dict[str, Any]:
    """One JSON formatter on stdout for our loggers and gunicorn's."""
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
                "static_fields": {"service": "dispatcher"},
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
            "gunicorn.error": {
                "level": level,
                "handlers": ["stdout"],
                "propagate": False,
            },
            "gunicorn.access": {
                "level": "WARNING",
                "handlers": ["stdout"],
                "propagate": False,
            },
        },
    }
