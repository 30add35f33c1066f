"""`pipeline status` with PARTITIONS > 1: each partition's figures (cli/status.py run
on that partition's queue) and their totals, so one look answers "how much waits"
and "where"."""

from dataclasses import replace
from typing import Any

from cli.settings import Settings
from pipeline_core import partitions
from pipeline_core.keys import slot

SUMMED = ("length", "lag", "pending", "dead_letters", "delayed")
LARGEST = ("oldest_pending_age_s", "oldest_undelivered_age_s",
           "delayed_oldest_overdue_s")  # fmt: skip
SHOWN = ("length", "lag", "pending", "dead_letters", "delayed")


def combine(base: Settings, each: list[dict[str, Any]]) -> dict[str, Any]:
    """The totals over partitions (sums, largest ages, consumers' pending summed),
    then every partition's own figures under `partitions`."""
    total = dict(each[0])
    total["stream"] = base.queue.stream
    for name in SUMMED:
        total[name] = sum(one[name] for one in each)
    for name in LARGEST:
        ages = [one[name] for one in each if one[name] is not None]
        total[name] = max(ages) if ages else None
    total["lag_source"] = _lag_source(each)
    total["consumers"] = _consumers(each)
    total["warnings"] = sorted({w for one in each for w in one["warnings"]})
    total["partitions"] = [
        {"partition": index, "stream": one["stream"], "slot": slot(one["stream"]),
         **{name: one[name] for name in SHOWN}}
        for index, one in enumerate(each)
    ]  # fmt: skip
    return total


def settings_of(base: Settings) -> list[Settings]:
    return [replace(base, queue=queue) for queue in partitions.parts(base.queue)]


def _lag_source(each: list[dict[str, Any]]) -> str:
    sources = {one["lag_source"] for one in each}
    return "estimated" if "estimated" in sources else sources.pop()


def _consumers(each: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for one in each:
        for consumer in one["consumers"]:
            seen = merged.setdefault(consumer["name"], {**consumer, "pending": 0})
            seen["pending"] += consumer["pending"]
            seen["idle_s"] = min(seen["idle_s"], consumer["idle_s"])
    return sorted(merged.values(), key=lambda consumer: consumer["name"])
