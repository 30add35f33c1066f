"""HTTP API: the app, its reads, auth and error answers; POST /dispatch lives in
dispatcher/dispatch.py, validation and Redis writes in their own modules."""

import logging
import time

import redis
from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException, InternalServerError

from dispatcher.auth import DISPATCHING, READING, Caller, caller
from dispatcher.console import install_console
from dispatcher.dispatch import RETRY_LATER, Answer, install_dispatch
from dispatcher.errors import BusyError, InvalidPayloadError
from dispatcher.metrics import DispatcherMetrics
from dispatcher.publisher import (
    NOT_CONFIRMED,
    PublishInterruptedError,
    queue_ids_exhausted,
    unavailable_body,
    unreplicated_body,
)
from dispatcher.ratelimit import WindowLimiter
from dispatcher.results import install_results
from dispatcher.settings import Settings
from dispatcher.tasks import install_tasks
from pipeline_core.connection import Client
from pipeline_core.replication import NotReplicatedError
from pipeline_core.replies import reason

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    client: Client,
    registry: CollectorRegistry | None = None,
    served: CollectorRegistry | None = None,
) -> Flask:
    """The Flask app: /dispatch, /results/<id>, /tasks/<id>, /healthz, /readyz,
    /metrics.
    Metrics are created on `registry`; /metrics serves `served` (default: the same)."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = DispatcherMetrics(registry)
    app = Flask("dispatcher")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    _install_request_metrics(app, metrics)  # first: it times every request
    _install_auth(app, settings, metrics)
    install_dispatch(app, settings, client, metrics)
    _install_reads(app, settings, client, served or registry)
    _install_redis_error_handlers(app, settings, metrics)
    _install_http_error_handlers(app, metrics)
    install_console(app, settings, client)  # /ui/, when it may be on
    return app


def _install_auth(app: Flask, settings: Settings, metrics: DispatcherMetrics) -> None:
    @app.before_request
    def require_token() -> Answer | None:
        """Who calls: a client's token dispatches and reads its own entries; an
        operator's token reads any entry; anonymous only on a loopback run."""
        header = request.headers.get("Authorization")
        if settings.allow_anonymous:
            g.caller = Caller(None)
            return None
        if request.endpoint in DISPATCHING:
            g.caller = caller(header, settings.tokens)
        elif request.endpoint in READING:
            g.caller = caller(header, settings.tokens, settings.operator_tokens)
        else:
            return None
        if g.caller is not None:
            return None
        # Refused before the body is read: nothing is parsed, nothing is written.
        metrics.unauthorized.inc()
        body = {"error": "unauthorized", "rule": "send Authorization: Bearer <token>"}
        headers = {
            "WWW-Authenticate": 'Bearer realm="dispatcher"',
            "Connection": "close",
        }
        return body, 401, headers


def _install_reads(
    app: Flask, settings: Settings, client: Client, registry: CollectorRegistry
) -> None:
    lookups = WindowLimiter(settings.lookups_per_minute, 60.0)
    install_results(app, settings, lookups, client)
    install_tasks(app, settings, lookups, client)

    @app.get("/healthz")
    def healthz() -> Answer:
        return {"status": "ok"}, 200  # the process answers; Redis is /readyz's business

    @app.get("/readyz")
    def readyz() -> Answer:
        """Ready while Redis answers and entries can be added to the stream."""
        client.ping()  # a Redis error becomes a 503 in the handler
        exhausted = queue_ids_exhausted(client, settings.queue)
        if exhausted:
            return {"status": "not ready", "reason": exhausted}, 503
        return {"status": "ready"}, 200

    @app.get("/metrics")
    def metrics_text() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _install_redis_error_handlers(
    app: Flask, settings: Settings, metrics: DispatcherMetrics
) -> None:
    @app.errorhandler(PublishInterruptedError)
    def interrupted(error: PublishInterruptedError) -> Answer:
        log.warning("paced dispatch interrupted", exc_info=True)
        written = len(error.entry_ids)
        metrics.messages.labels("accepted").inc(written)
        metrics.messages.labels("failed").inc(g.get("message_count", 0) - written)
        body = {"error": f"{error.why}; only entry_ids were written"}
        if settings.replicas:  # none of them was confirmed on replicas
            body["outcome"] = NOT_CONFIRMED
        return {**body, "entry_ids": error.entry_ids}, 503, RETRY_LATER

    @app.errorhandler(NotReplicatedError)
    def not_replicated(error: NotReplicatedError) -> Answer:
        facts = {"acked": error.acked, "wanted": error.wanted}
        log.warning("writes not confirmed on replicas", extra=facts)
        metrics.unreplicated.inc()
        metrics.messages.labels("failed").inc(len(error.entry_ids))
        return unreplicated_body(error), 503, RETRY_LATER

    @app.errorhandler(BusyError)
    def busy(error: BusyError) -> Answer:
        metrics.messages.labels("throttled").inc(1)  # how many: the body was not read
        return {"error": "busy", "reason": str(error)}, 503, RETRY_LATER

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(redis.exceptions.RedisClusterException)  # pipeline_core/replies
    def unavailable(error: Exception) -> Answer:
        # Nothing was written: a batch's MULTI/EXEC ran whole or not at all.
        kind = reason(error)
        log.warning(
            "redis unavailable", extra={"reason": kind, "error": type(error).__name__}
        )
        metrics.messages.labels("failed").inc(g.get("message_count", 0))
        return unavailable_body(kind, error), 503, RETRY_LATER


def _install_http_error_handlers(app: Flask, metrics: DispatcherMetrics) -> None:
    @app.errorhandler(InvalidPayloadError)
    def invalid(error: InvalidPayloadError) -> Answer:
        body = {"error": "invalid request", "field": error.field, "rule": error.rule}
        return body, error.status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Answer:
        if error.code == 413:
            return {
                "error": "invalid request",
                "field": "body",
                "rule": "too large",
            }, 413
        return {"error": (error.name or "error").lower()}, error.code or 500

    @app.errorhandler(InternalServerError)
    def internal(error: InternalServerError) -> Answer:
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
