"""The console's pages (GET only): overview, consumers, pending entries, dead letters
and one dead letter, and the chart's JSON. Every number of the group comes from the
one reading of its state, pipeline_core.group_state.read_group_state, per partition
and totalled (pipeline_core.all_partitions) with PARTITIONS > 1."""

import json
import logging
import time
from collections.abc import Mapping

import redis
from flask import Blueprint, abort, request
from werkzeug.exceptions import HTTPException

from dispatcher.console import data, stats
from dispatcher.console.views import render
from dispatcher.settings import Settings
from dispatcher.stream_state import ACTIVE_WITHIN_S
from pipeline_core import all_partitions, consumers, dead_partitions, partitions
from pipeline_core.connection import Client
from pipeline_core.dead_letters import NoSuchDeadLetterError
from pipeline_core.keys import Queue

log = logging.getLogger(__name__)

# Consumers idle this long with nothing pending may be pruned (`pipeline consumers
# prune`'s default); the Lua step checks it again at the moment of deletion.
PRUNE_IDLE_MS = 3_600_000


def cursor(name: str, queue: Queue) -> str | None:
    """An entry-ID cursor from the query string (with PARTITIONS > 1, partition-
    qualified: p<partition>-<entry ID>); anything else is refused."""
    value = request.args.get(name) or None
    if value is not None and not partitions.is_id(queue, value):
        example = "1700000000000-0" if queue.partitions == 1 else "p0-1700000000000-0"
        abort(400, f"{name} must be an entry ID such as {example}")
    return value


def dead_filter(fields: Mapping[str, str]) -> data.DeadFilter:
    task = (fields.get("task") or "").strip()
    error = (fields.get("error") or "").strip()
    return data.DeadFilter(task or None, error or None)


def install(console: Blueprint, settings: Settings, client: Client) -> None:
    _install_group_pages(console, settings, client)
    _install_pending_page(console, settings, client)
    _install_dead_pages(console, settings, client)
    _install_error_pages(console)


def _install_group_pages(
    console: Blueprint, settings: Settings, client: Client
) -> None:
    queue = settings.queue

    @console.get("/")
    def overview() -> str:
        states = all_partitions.read_states(client, queue)
        state = all_partitions.total(states)
        alive = state.active_consumers(ACTIVE_WITHIN_S)
        # With PARTITIONS > 1 the numbers are totals, and a table shows each.
        each = list(zip(partitions.parts(queue), states, strict=True))
        return render(
            "overview", active="overview", state=state, alive=alive,
            partitions=each if queue.partitions > 1 else [],
        )  # fmt: skip

    @console.get("/consumers")
    def consumers_page() -> str:
        state = all_partitions.total(all_partitions.read_states(client, queue))
        prunable = {c.name for c in consumers.prunable(state.consumers, PRUNE_IDLE_MS)}
        return render(
            "consumers", active="consumers", state=state, prunable=prunable,
            prune_idle_s=PRUNE_IDLE_MS / 1000,
        )  # fmt: skip

    @console.get("/api/throughput")
    def throughput() -> dict[str, object]:
        return stats.throughput(client, queue, int(time.time() * 1000))


def _install_pending_page(
    console: Blueprint, settings: Settings, client: Client
) -> None:
    @console.get("/pending")
    def pending() -> str:
        consumer = request.args.get("consumer") or None
        after = cursor("after", settings.queue)
        state = all_partitions.total(all_partitions.read_states(client, settings.queue))
        page = None
        if state.group_exists:
            page = data.pending_page(
                client, settings.queue, consumer, after, settings.claim_idle_ms
            )
        return render(
            "pending", active="pending", state=state, page=page, consumer=consumer,
            claim_idle_ms=settings.claim_idle_ms,
        )  # fmt: skip


def _install_dead_pages(console: Blueprint, settings: Settings, client: Client) -> None:
    queue = settings.queue

    @console.get("/dead")
    def dead() -> str:
        wanted = dead_filter(request.args)
        page = data.dead_page(client, queue, wanted, cursor("after", queue))
        total = dead_partitions.count(client, queue)
        go_on = request.args.get("go_on_action")  # where the last action stopped
        return render(
            "dead", active="dead", page=page, wanted=wanted, total=total,
            budget=data.SCAN_BUDGET, go_on_after=cursor("go_on", queue),
            go_on=go_on if go_on in ("replay", "purge") else None,
        )  # fmt: skip

    @console.get("/dead/<dead_id>")
    def dead_letter(dead_id: str) -> str:
        try:
            letter = dead_partitions.show(client, queue, dead_id)
        except NoSuchDeadLetterError:
            abort(404, f"No dead letter {dead_id}: replayed or purged already?")
        payload = letter.pop("payload", None)
        if not isinstance(payload, str):  # parsed JSON: shown indented
            payload = json.dumps(payload, indent=2, ensure_ascii=False)
        return render("dead_letter", active="dead", letter=letter, payload=payload)


def _install_error_pages(console: Blueprint) -> None:
    @console.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[str, int]:
        return render("error", error=error), error.code or 500

    @console.errorhandler(redis.RedisError)
    @console.errorhandler(redis.exceptions.RedisClusterException)
    def redis_error(error: Exception) -> tuple[str, int]:
        log.warning("console: redis unavailable", extra={"error": type(error).__name__})
        return render("error", error=None), 503
