"""The checker: compares what clients were told with what the tasks actually did.

Tokens name what each message is: `w…` healthy work, `r…` healthy work retried (fails
its first RETRIED_FAILURES attempts, then succeeds), `p…` poison (always raises), `c…`
crash-prone (kills its consumer). The ledger maps each token to its task ID, stable
across delayed dispatch and retries. For every token a client got a 202 for:

- healthy: must have run as often as it is expected to (processed: once, a retried
  one RETRIED_FAILURES + 1 times) and must never be dead-lettered;
- poison or crash: must sit in the dead-letter stream exactly once, after the attempts
  the policy allows (MAX_DELIVERIES); a run of one never counts as processed.

lost        = accepted healthy entries that never ran (or ran fewer times than
              expected), and accepted poison/crash entries not contained as the policy
              says (dropped, or given up too early)
unexpected  = entries that ran or were dead-lettered but were never accepted (nor
              answered with an unknown outcome: a 5xx or timeout may have written them)
duplicates  = runs of healthy entries beyond those expected (each scenario bounds them)
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from chaos.load import Ledger
from pipeline_core.connection import Client
from pipeline_core.delayed import delayed_key
from pipeline_core.keys import Queue
from pipeline_core.partitions import parts
from pipeline_core.wire import stream_entries

RETRIED_FAILURES = 2  # the attempts of chaos.flaky (`r…`) that fail
LOST = "accepted but lost"  # the problem a loss adds to a report


@dataclass
class Report:
    scenario: str
    acknowledged: int = 0
    refused: int = 0
    unknown: int = 0
    processed: int = 0
    dead_lettered: int = 0
    lost: int = 0
    unexpected: int = 0
    wrongly_dead: int = 0
    duplicates: int = 0
    max_deliveries: int = 0
    drained: bool = False
    recovery_s: float | None = None
    peak_xlen: int = 0
    peak_memory_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    # A bound a broken control must keep (its loss attributable to its faults).
    violations: list[str] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems and not self.violations


def read_runs(record_dir: Path) -> Counter[str]:
    """How many times each token's task ran (from every consumer process's file)."""
    runs: Counter[str] = Counter()
    for path in record_dir.glob("*.runs"):
        for line in path.read_text().splitlines():
            runs[line.split(" ", 1)[0]] += 1
    return runs


def run_times(record_dir: Path, prefix: str) -> list[float]:
    """When the runs of tokens starting with `prefix` finished, in order."""
    times = []
    for path in record_dir.glob("*.runs"):
        for line in path.read_text().splitlines():
            token, _consumer, finished = line.split(" ")
            if token.startswith(prefix):
                times.append(float(finished))
    return sorted(times)


def read_dead_letters(client: Client, dead_stream: str) -> dict[str, list[int]]:
    """Token -> the `deliveries` of each of its dead letters. An entry another
    producer wrote (undecodable, or without a token) counts as "?<source ID>"."""
    dead: dict[str, list[int]] = {}
    for _dead_id, fields in stream_entries(client.xrange(dead_stream)):
        token = _token(fields) or f"?{fields.get('source_id')}"
        dead.setdefault(token, []).append(int(fields.get("deliveries", "0")))
    return dead


def read_queue_dead_letters(client: Client, queue: Queue) -> dict[str, list[int]]:
    """read_dead_letters over every partition of the queue."""
    dead: dict[str, list[int]] = {}
    for part in parts(queue):
        for token, deliveries in read_dead_letters(
            client, part.dead_letter_stream
        ).items():
            dead.setdefault(token, []).extend(deliveries)
    return dead


def _token(fields: dict[str, str]) -> str | None:
    try:
        payload = json.loads(fields.get("payload", ""))
    except ValueError:
        return None
    token = payload.get("token") if isinstance(payload, dict) else None
    return token if isinstance(token, str) else None


def drained(client: Client, stream: str, group: str) -> bool:
    """Everything on the stream delivered and acknowledged, and nothing waiting in the
    delayed set (delayed tasks, retries): read in one MULTI, since a promotion or a
    retry moves a task between the two. Compares the group's position with the
    stream's last ID rather than trusting `lag`, which can be NULL."""
    waiting = delayed_key(Queue(stream=stream, group=group))
    if not client.exists(stream):
        return not client.zcard(waiting)
    with client.pipeline(transaction=True) as pipe:
        pipe.zcard(waiting)
        pipe.xinfo_stream(stream)
        pipe.xinfo_groups(stream)
        delayed, info, groups = pipe.execute()
    ours = [g for g in groups if g["name"] == group]
    return (
        not delayed
        and bool(ours)
        and ours[0]["pending"] == 0
        and (ours[0]["last-delivered-id"] == info["last-generated-id"])
    )


def queue_drained(client: Client, queue: Queue) -> bool:
    """drained, for every partition of the queue."""
    return all(drained(client, part.stream, part.group) for part in parts(queue))


def healthy(token: str) -> bool:
    return token[:1] in ("w", "r")


def expected_runs(token: str) -> int:
    """How often a healthy token's task runs with no fault: a retried one's failures,
    then its success."""
    return RETRIED_FAILURES + 1 if token.startswith("r") else 1


def foreign(token: str) -> bool:
    """Written by another producer (x…) or undecodable (?…): no client was told."""
    return token[:1] in ("x", "?")


def check(
    report: Report,
    ledger: Ledger,
    runs: Counter[str],
    dead: dict[str, list[int]],
    max_deliveries: int,
) -> Report:
    """Fill the report's counts and add the generic problems to it."""
    acked, unknown = set(ledger.acknowledged), ledger.unknown
    report.acknowledged, report.refused = len(acked), len(ledger.refused)
    report.unknown = len(unknown)
    report.dead_lettered = sum(1 for t in dead if not foreign(t))
    done = {t for t in acked if healthy(t) and extra_runs(t, runs) >= 0}
    report.processed = len(done - set(dead))
    report.duplicates = sum(max(0, extra_runs(t, runs)) for t in runs if healthy(t))
    report.max_deliveries = max([*runs.values(), *(max(d) for d in dead.values()), 0])
    lost = [t for t in acked if healthy(t) and t not in done]
    lost += _uncontained(acked, runs, dead, max_deliveries, report)
    wrongly_dead = sorted(t for t in dead if healthy(t))
    ran_or_dead = {t for t in set(runs) | set(dead) if not foreign(t)}
    unexpected = sorted(ran_or_dead - acked - unknown)
    report.lost, report.unexpected = len(lost), len(unexpected)
    report.wrongly_dead = len(wrongly_dead)
    for count, what, examples in (
        (len(lost), LOST, sorted(lost)),
        (len(wrongly_dead), "healthy entries dead-lettered", wrongly_dead),
        (len(unexpected), "never accepted but ran or were dead-lettered", unexpected),
    ):
        if count:
            report.problems.append(f"{count} {what}, e.g. {examples[:3]}")
    if not report.drained:
        report.problems.append("the group did not drain within the deadline")
    return report


def extra_runs(token: str, runs: Counter[str]) -> int:
    """A healthy token's runs beyond (or, negative, short of) those expected."""
    return runs[token] - expected_runs(token)


def _uncontained(
    acked: set[str],
    runs: Counter[str],
    dead: dict[str, list[int]],
    max_deliveries: int,
    report: Report,
) -> list[str]:
    """Accepted poison/crash entries the policy did not contain: never dead-lettered,
    or given up after fewer deliveries than it allows (both count as lost);
    dead-lettered twice, or run more often than it allows (problems)."""
    lost = []
    for token in sorted(t for t in acked if not healthy(t)):
        letters = dead.get(token, [])
        if not letters or min(letters) < max_deliveries or not runs[token]:
            lost.append(token)
        if len(letters) > 1:
            report.problems.append(f"{token} dead-lettered {len(letters)} times")
        if runs[token] > max_deliveries:
            report.problems.append(
                f"{token} ran {runs[token]} times, over {max_deliveries}"
            )
    return lost
