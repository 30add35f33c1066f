"""The dispatcher's Prometheus metrics, created on a registry the caller passes in."""

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                     10, 30, 60)  # fmt: skip


class DispatcherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "dispatcher_messages",
            "Messages in /dispatch requests by outcome: accepted (on the stream), "
            "refused (4xx but 429; 1 per request when the body does not say how many), "
            "throttled (429, 507, 503 busy), failed (Redis error), replayed (a repeat "
            "of an Idempotency-Key's request: answered, nothing written).",
            ["outcome"],
            registry=registry,
        )
        self.requests = Counter(
            "dispatcher_http_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "code"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "dispatcher_http_request_duration_seconds",
            "Time to answer an HTTP request, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.unauthorized = Counter(
            "dispatcher_unauthorized_requests",
            "Requests refused for a missing or wrong bearer token (401).",
            registry=registry,
        )
        self.unreplicated = Counter(
            "dispatcher_unreplicated_writes",
            "Dispatch requests answered 503 because WAIT confirmed their entries on "
            "fewer than MIN_REPLICAS_ACKED replicas within REPLICA_ACK_TIMEOUT_MS "
            "(written on the master: they may or may not survive a failover).",
            registry=registry,
        )
        for outcome in ("accepted", "refused", "throttled", "failed", "replayed"):
            self.messages.labels(outcome)
