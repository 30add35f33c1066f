"""`pipeline status [--watch S]`: the stream, group, consumers and Redis at a glance."""

import argparse
import time
from datetime import UTC, datetime
from typing import Any

import redis
from rich.console import Console

from cli import output, partitioned
from cli.settings import CliError, Settings, connect_cli
from pipeline_core.connection import Client, describe, queue_node
from pipeline_core.group_state import GroupState, read_group_state
from pipeline_core.memory import read_memory
from pipeline_core.schedules import read_schedules

WATCHED_CONFIG = ("appendonly", "appendfsync", "maxmemory-policy")
OVERDUE_WARNING_S = 10  # consumers move due tasks within a second


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    status = sub.add_parser(
        "status", help="the stream, group, consumers and Redis at a glance"
    )
    status.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                        help="refresh every SECONDS (2) until Ctrl-C")  # fmt: skip
    status.add_argument("--json", action="store_true", help="JSON for scripts")
    status.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """Once, or with --watch every few seconds until Ctrl-C (which ends it cleanly)."""
    client = connect_cli(settings)
    try:
        while True:
            data = status(client, settings)
            if args.json:
                output.as_json(data)
            else:
                if args.watch:
                    console.clear()
                output.status(data, console)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def require_group(state: GroupState, settings: Settings) -> None:
    """A missing stream or group is for the operator to fix (or wait for)."""
    q = settings.queue
    if not state.stream_exists:
        raise CliError(
            f"no stream {q.stream!r}: none dispatched yet, or STREAM is wrong"
        )
    if not state.group_exists:
        raise CliError(
            f"no group {q.group!r} on stream {q.stream!r}: start a consumer once "
            "(it creates it), or check GROUP"
        )


def status(client: Client, settings: Settings) -> dict[str, Any]:
    """The queue's state; with PARTITIONS > 1 the totals and each partition's."""
    if settings.queue.partitions == 1:
        return _status(client, settings)
    each = [_status(client, part) for part in partitioned.settings_of(settings)]
    return partitioned.combine(settings, each)


def _status(client: Client, settings: Settings) -> dict[str, Any]:
    state = read_group_state(client, settings.queue)
    require_group(state, settings)
    persistence, warnings = _persistence(client, settings)
    warnings += state_warnings(state)
    memory = read_memory(client, settings.queue)
    if not memory.max_bytes:
        warnings.append("Redis has no maxmemory: nothing bounds the queue's memory")
    server = queue_node(client, settings.queue).info("server")
    return {
        "stream": settings.queue.stream,
        "length": state.length,
        "group": settings.queue.group,
        "consumers": [
            {"name": c.name, "pending": c.pending, "idle_s": c.idle_s}
            for c in state.consumers
        ],
        "lag": state.lag,
        "lag_source": state.lag_source,
        "pending": state.pending,
        "oldest_pending_age_s": state.oldest_pending_age_s,
        "oldest_undelivered_age_s": state.oldest_undelivered_age_s,
        "dead_letters": state.dead_letters,
        "delayed": state.delayed,
        "delayed_oldest_overdue_s": state.oldest_overdue_s,
        "schedules": _schedules(client, settings),
        "memory_used_bytes": memory.used_bytes,
        "maxmemory_bytes": memory.max_bytes,
        "other_groups": [
            {"name": g.name, "lag": g.lag, "pending": g.pending}
            for g in state.other_groups
        ],
        "redis_version": server["redis_version"],
        "redis_url": describe(settings.redis),
        "persistence": persistence,
        "warnings": warnings,
    }


def _schedules(client: Client, settings: Settings) -> list[dict[str, Any]]:
    return [
        {
            "task": schedule.name,
            "last_tick": _iso(schedule.last_ms),
            "next_tick": _iso(schedule.next_ms),
            "last_entry_id": schedule.last_id,
        }
        for schedule in read_schedules(client, settings.queue)
    ]


def _iso(ms: int | None) -> str | None:
    """A Unix time in ms as UTC ISO 8601 (to the second), for people and scripts."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def state_warnings(state: GroupState) -> list[str]:
    """What another writer or reader of the stream did that operators must know."""
    warnings = []
    if state.oldest_overdue_s > OVERDUE_WARNING_S:
        warnings.append(f"a delayed task is {state.oldest_overdue_s:.0f} s past due: "
                        "no consumer is moving due tasks (none running?)")  # fmt: skip
    if state.ids_exhausted:
        warnings.append("the stream's last ID is the largest possible: no entry can "
                        "be added (another producer wrote it)")  # fmt: skip
    elif state.last_id_ahead_s > 1:
        warnings.append(f"the stream's last ID is {state.last_id_ahead_s:.0f} s in the "
                        "future (another producer wrote it): new IDs are pinned to it "
                        "and their ages are unknown")  # fmt: skip
    for group in state.other_groups:
        warnings.append(f"another group {group.name!r} reads this stream (lag "
                        f"{group.lag}, pending {group.pending}): trimming keeps every "
                        "entry it has not finished")  # fmt: skip
    return warnings


def _persistence(
    client: Client, settings: Settings
) -> tuple[dict[str, str], list[str]]:
    node = queue_node(client, settings.queue)
    try:
        config = {
            name: str(node.config_get(name).get(name, "?")) for name in WATCHED_CONFIG
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
