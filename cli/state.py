"""What `pipeline status` and `pipeline pending` show, read from Redis."""

import time
from typing import Any

import redis

from cli.replies import entries, text
from cli.settings import CliError, Settings

WATCHED_CONFIG = ("appendonly", "appendfsync", "maxmemory-policy")


def age_s(entry_id: str | None) -> float | None:
    """Seconds since the enqueue time an entry ID records."""
    if not entry_id:
        return None
    return max(0.0, time.time() - int(entry_id.split("-", 1)[0]) / 1000)


def group_info(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """The group's XINFO GROUPS row; a missing stream or group is for the operator."""
    what = f"group {settings.group!r} on stream {settings.stream!r}"
    if not client.exists(settings.stream):
        raise CliError(
            f"no stream {settings.stream!r}: none dispatched yet, or STREAM is wrong"
        )
    for group in client.xinfo_groups(settings.stream):
        if group["name"] == settings.group:
            found: dict[str, Any] = group
            return found
    raise CliError(f"no {what}: start a consumer once (it creates it), or check GROUP")


def status(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    group = group_info(client, settings)
    last_delivered = group["last-delivered-id"]
    undelivered = entries(
        client.xrange(settings.stream, min=f"({last_delivered}", count=1)
    )
    summary = client.xpending(settings.stream, settings.group)
    consumers = [
        {"name": c["name"], "pending": c["pending"], "idle_s": c["idle"] / 1000}
        for c in client.xinfo_consumers(settings.stream, settings.group)
    ]
    persistence, warnings = _persistence(client)
    return {
        "stream": settings.stream,
        "length": client.xlen(settings.stream),
        "group": settings.group,
        "consumers": consumers,
        "lag": group["lag"],  # None when Redis cannot tell (entries deleted)
        "pending": group["pending"],
        "oldest_pending_age_s": age_s(summary["min"] and text(summary["min"])),
        "oldest_undelivered_age_s": age_s(undelivered[0][0] if undelivered else None),
        "dead_letters": client.xlen(settings.dead_letter_stream),
        "redis_version": client.info("server")["redis_version"],
        "persistence": persistence,
        "warnings": warnings,
    }


def _persistence(client: redis.Redis) -> tuple[dict[str, str], list[str]]:
    try:
        config = {
            name: text(client.config_get(name).get(name, "?"))
            for name in WATCHED_CONFIG
        }
    except redis.exceptions.NoPermissionError:
        return {}, [
            "cannot read the persistence settings (CONFIG GET refused to this user)"
        ]
    warnings = []
    if config["appendonly"] != "yes":
        warnings.append(
            "appendonly is off: a Redis crash loses acknowledged dispatches"
        )
    if config["maxmemory-policy"] != "noeviction":
        policy = config["maxmemory-policy"]
        warnings.append(
            f"maxmemory-policy is {policy}: Redis may evict the stream itself"
        )
    return config, warnings


def pending(
    client: redis.Redis,
    settings: Settings,
    consumer: str | None,
    min_idle_ms: int,
    count: int,
) -> list[dict[str, Any]]:
    """Pending entries, oldest first, with their owner, idle time and deliveries."""
    group_info(client, settings)
    rows = client.xpending_range(
        settings.stream, settings.group, "-", "+", count,
        consumername=consumer, idle=min_idle_ms or None,
    )  # fmt: skip
    return [_pending_row(row, settings.claim_idle_ms) for row in rows]


def _pending_row(row: dict[str, Any], claim_idle_ms: int) -> dict[str, Any]:
    idle_ms = int(row["time_since_delivered"])
    return {
        "entry_id": text(row["message_id"]),
        "consumer": text(row["consumer"]),
        "idle_s": idle_ms / 1000,
        "deliveries": int(row["times_delivered"]),
        "age_s": age_s(text(row["message_id"])),
        "past_claim_idle": idle_ms >= claim_idle_ms,
    }
