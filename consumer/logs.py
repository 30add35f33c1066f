"""JSON-lines logging on stdout for the consumer, every line naming the consumer."""

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str, consumer_name: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"service": "consumer", "consumer": consumer_name},
        )
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
