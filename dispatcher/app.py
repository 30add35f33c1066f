"""HTTP API: routes only; validation and Redis writes live elsewhere."""

import json
import logging
import time
from typing import Any

import redis
from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException, InternalServerError

from dispatcher.errors import InvalidPayloadError
from dispatcher.metrics import DispatcherMetrics
from dispatcher.publisher import (
    PublishInterruptedError,
    publish,
    publish_paced,
    result_key,
)
from dispatcher.settings import Settings
from dispatcher.validation import check_entry_id, decode_json, parse_dispatch

log = logging.getLogger(__name__)

RETRY_AFTER_S = "1"


def create_app(
    settings: Settings,
    client: redis.Redis,
    registry: CollectorRegistry | None = None,
) -> Flask:
    """The Flask app: /dispatch, /results/<entry_id>, /healthz, /readyz, /metrics."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = DispatcherMetrics(registry)
    app = Flask("dispatcher")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    _install_routes(app, settings, client, metrics)
    _install_probes(app, client, registry)
    _install_error_handlers(app, metrics)
    _install_request_metrics(app, metrics)
    return app


def _install_routes(
    app: Flask, settings: Settings, client: redis.Redis, metrics: DispatcherMetrics
) -> None:
    @app.post("/dispatch")
    def dispatch() -> tuple[dict[str, Any], int]:
        if not request.is_json:
            raise InvalidPayloadError(
                "Content-Type", "must be application/json", status=415
            )
        order = parse_dispatch(decode_json(request.get_data()), settings)
        g.message_count = len(order.payloads)
        if order.delay_s > 0:
            entry_ids = publish_paced(
                client, settings.stream, order.task, order.payloads, order.delay_s
            )
        else:
            entry_ids = publish(client, settings.stream, order.task, order.payloads)
        metrics.messages.labels("accepted").inc(len(entry_ids))
        log.info(
            "dispatch accepted",
            extra={
                "task": order.task,
                "count": len(entry_ids),
                "first_entry_id": entry_ids[0],
            },
        )
        body = {"stream": settings.stream, "task": order.task, "count": len(entry_ids)}
        return {**body, "entry_ids": entry_ids}, 202

    @app.get("/results/<entry_id>")
    def result(entry_id: str) -> tuple[dict[str, Any], int]:
        stored = client.get(result_key(settings.stream, check_entry_id(entry_id)))
        if stored is None:
            return {
                "error": "no result (yet) for this entry",
                "entry_id": entry_id,
            }, 404
        return {"entry_id": entry_id, "result": json.loads(stored)}, 200


def _install_probes(
    app: Flask, client: redis.Redis, registry: CollectorRegistry
) -> None:
    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}  # the process answers; Redis is /readyz's business

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        client.ping()  # a Redis error becomes a 503 in the handler below
        return {"status": "ready"}

    @app.get("/metrics")
    def metrics_text() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _install_error_handlers(app: Flask, metrics: DispatcherMetrics) -> None:
    @app.errorhandler(InvalidPayloadError)
    def invalid(error: InvalidPayloadError) -> tuple[dict[str, str], int]:
        metrics.messages.labels("refused").inc(g.get("message_count", 0))
        return {
            "error": "invalid request",
            "field": error.field,
            "rule": error.rule,
        }, error.status

    @app.errorhandler(PublishInterruptedError)
    def interrupted(
        error: PublishInterruptedError,
    ) -> tuple[dict[str, Any], int, dict[str, str]]:
        log.warning("paced dispatch interrupted", exc_info=True)
        metrics.messages.labels("accepted").inc(len(error.entry_ids))
        metrics.messages.labels("failed").inc(
            g.get("message_count", 0) - len(error.entry_ids)
        )
        body = {"error": "redis unavailable; only entry_ids were written"}
        return (
            {**body, "entry_ids": error.entry_ids},
            503,
            {"Retry-After": RETRY_AFTER_S},
        )

    @app.errorhandler(redis.RedisError)
    def unavailable(
        error: redis.RedisError,
    ) -> tuple[dict[str, str], int, dict[str, str]]:
        # Nothing was acknowledged: a MULTI/EXEC either ran whole or not at all.
        log.warning("redis unavailable", extra={"error": type(error).__name__})
        metrics.messages.labels("failed").inc(g.get("message_count", 0))
        return {"error": "redis unavailable"}, 503, {"Retry-After": RETRY_AFTER_S}

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[dict[str, str], int]:
        if error.code == 413:
            return {
                "error": "invalid request",
                "field": "body",
                "rule": "too large",
            }, 413
        return {"error": (error.name or "error").lower()}, error.code or 500

    @app.errorhandler(InternalServerError)
    def internal(error: InternalServerError) -> tuple[dict[str, str], int]:
        log.error("unhandled error", exc_info=error.original_exception)
        return {"error": "internal error"}, 500


def _install_request_metrics(app: Flask, metrics: DispatcherMetrics) -> None:
    @app.before_request
    def start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.request_seconds.labels(endpoint).observe(
            time.perf_counter() - g.started
        )
        return response
