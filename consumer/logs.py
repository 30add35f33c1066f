"""JSON-lines logging on stdout for the consumer, every line naming the consumer."""

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str, consumer_name: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            timestamp="time",  # ISO 8601, UTC, to the microsecond
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"service": "consumer", "consumer": consumer_name},
        )
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
