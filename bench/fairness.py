"""Slow tasks put on the stream at once and drained by consumers with default settings,
on the drain clock: the makespan of sleeps against the ideal (the work split evenly),
and of CPU-bound `primes` calls against plain processes making the same calls."""

import json
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.typing import EncodableT, FieldT

from bench import drain, raw


@dataclass(frozen=True)
class Work:
    tasks: int
    sleep_s: float  # each sleep task
    primes_n: int  # each primes task: primes(n)


def entry(task: str, payload: dict[str, float]) -> dict[FieldT, EncodableT]:
    return {"task": task, "payload": json.dumps(payload)}


def makespan(
    url: str,
    client: redis.Redis,
    workers: int,
    fields: dict[FieldT, EncodableT],
    tasks: int,
    log_dir: Path,
) -> float:
    """Seconds `workers` consumers take to finish `tasks` entries put on at once."""
    drain.fresh_group(client)
    with drain.consumers(url, workers, log_dir) as services:
        return drain.drain(client, services, tasks, fields, every_s=0.01).seconds


def measure(
    url: str, client: redis.Redis, work: Work, log_dir: Path
) -> dict[str, float]:
    """One run's figures: sleep makespan and its ideal on 2 consumers; primes on 1 and
    2 consumers, and on 1 and 2 plain processes, each pair timed back to back."""
    sleep = entry("sleep", {"seconds": work.sleep_s})
    primes = entry("primes", {"n": work.primes_n})
    figures = {
        "sleep makespan": makespan(url, client, 2, sleep, work.tasks, log_dir),
        "sleep ideal": work.tasks * work.sleep_s / 2,
        "plain primes 1": raw.plain_seconds(1, work.tasks, work.primes_n),
        "primes 1": makespan(url, client, 1, primes, work.tasks, log_dir),
        "plain primes 2": raw.plain_seconds(2, work.tasks, work.primes_n),
        "primes 2": makespan(url, client, 2, primes, work.tasks, log_dir),
    }
    figures["speed-up"] = figures["primes 1"] / figures["primes 2"]
    figures["plain speed-up"] = figures["plain primes 1"] / figures["plain primes 2"]
    return figures
