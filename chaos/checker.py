"""The checker: compares what clients were told with what the tasks actually did.

lost        = acknowledged - (processed | dead-lettered)    must be empty
unexpected  = (processed | dead-lettered) - (acknowledged | unknown)    must be empty
duplicates  = extra runs of healthy entries (reported; some scenarios bound them)
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis

from chaos.load import Ledger
from pipeline_core.wire import stream_entries


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
    duplicates: int = 0
    max_deliveries: int = 0
    drained: bool = False
    recovery_s: float | None = None
    peak_xlen: int = 0
    peak_memory_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems


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


def read_dead_letters(client: redis.Redis, dead_stream: str) -> dict[str, list[int]]:
    """Token -> the `deliveries` of each of its dead letters."""
    dead: dict[str, list[int]] = {}
    for _dead_id, fields in stream_entries(client.xrange(dead_stream)):
        token = json.loads(fields["payload"])["token"]
        dead.setdefault(token, []).append(int(fields["deliveries"]))
    return dead


def drained(client: redis.Redis, stream: str, group: str) -> bool:
    """Everything on the stream delivered and acknowledged. Compares the group's
    position with the stream's last ID rather than trusting `lag`, which can be NULL."""
    if not client.exists(stream):
        return True
    last_id = client.xinfo_stream(stream)["last-generated-id"]
    groups = [g for g in client.xinfo_groups(stream) if g["name"] == group]
    return (
        bool(groups)
        and groups[0]["pending"] == 0
        and (groups[0]["last-delivered-id"] == last_id)
    )


def check(
    report: Report, ledger: Ledger, runs: Counter[str], dead: dict[str, list[int]]
) -> Report:
    """Fill the report's counts and add the generic problems to it."""
    acked, unknown = set(ledger.acknowledged), ledger.unknown
    done = set(runs) | set(dead)
    lost = sorted(acked - done)
    unexpected = sorted(done - acked - unknown)
    report.acknowledged, report.refused = len(acked), len(ledger.refused)
    report.unknown, report.processed = len(unknown), len(set(runs) - set(dead))
    report.dead_lettered = len(dead)
    report.lost, report.unexpected = len(lost), len(unexpected)
    report.duplicates = sum(n - 1 for t, n in runs.items() if t.startswith("w"))
    report.max_deliveries = max([*runs.values(), *(max(d) for d in dead.values()), 0])
    if lost:
        report.problems.append(f"{len(lost)} acknowledged but lost, e.g. {lost[:3]}")
    if unexpected:
        report.problems.append(
            f"{len(unexpected)} never accepted but ran: {unexpected[:3]}"
        )
    if not report.drained:
        report.problems.append("the group did not drain within the deadline")
    return report
