"""What the console's pages read, in pages that stay fast on a million entries:
pending entries by XPENDING ranges from an exclusive cursor, dead letters by XREVRANGE
ranges, and filtered dead letters by a scan with a bounded budget per page. With
PARTITIONS > 1 every partition's, merged, their IDs (and cursors) p<i>-<entry ID>."""

import itertools
import time
from dataclasses import dataclass
from typing import Any

from pipeline_core import all_partitions, dead_letters, dead_partitions
from pipeline_core.connection import Client
from pipeline_core.group_state import age_s
from pipeline_core.keys import Queue

PAGE_SIZE = 50
# A filtered page examines at most this many dead letters, newest first; when the
# budget runs out before the page is full, the page offers to continue from there.
SCAN_BUDGET = 5_000
# An action on "every match" takes at most ACTION_LIMIT dead letters, examining at
# most ACTION_SCAN_BUDGET, oldest first, per confirmation (about a second each): a
# request never outlives the server's timeout, whatever the stream's length. Where it
# stopped is a cursor the next confirmation goes on from.
ACTION_LIMIT = 10_000
ACTION_SCAN_BUDGET = 100_000


@dataclass(frozen=True, slots=True)
class PendingRow:
    entry_id: str
    consumer: str
    idle_s: float
    deliveries: int
    age_s: float | None
    claimable: bool  # idle at least CLAIM_IDLE_MS: any consumer's XAUTOCLAIM takes it


@dataclass(frozen=True, slots=True)
class PendingPage:
    rows: list[PendingRow]
    next_after: str | None  # the cursor of the next page; None on the last page


@dataclass(frozen=True, slots=True)
class DeadFilter:
    task: str | None = None
    error: str | None = None  # text in the error, any case

    @property
    def active(self) -> bool:
        return bool(self.task or self.error)

    def args(self) -> dict[str, Any]:
        """As query or form fields."""
        return {k: v for k, v in (("task", self.task), ("error", self.error)) if v}


@dataclass(frozen=True, slots=True)
class DeadPage:
    letters: list[dict[str, str]]  # newest first: dead_id plus the entry's fields
    next_after: str | None  # where the next page (or the search) goes on
    examined: int = 0
    budget_spent: bool = False  # the scan stopped at SCAN_BUDGET, page not full


def pending_page(
    client: Client,
    queue: Queue,
    consumer: str | None,
    after: str | None,
    claim_idle_ms: int,
) -> PendingPage:
    """Pending entries, oldest first: one XPENDING range per partition (one more than
    a page, to know whether another page follows), never a scan of the whole list.
    With PARTITIONS > 1 the IDs, and so the cursor `after`, are p<i>-<entry ID>."""
    reply = all_partitions.pending(client, queue, PAGE_SIZE + 1, consumer, (0, after))
    now_s = time.time()  # ages for people: our clock, a page at a time
    rows = [_pending_row(row, claim_idle_ms, now_s) for row in reply[:PAGE_SIZE]]
    more = len(reply) > PAGE_SIZE
    return PendingPage(rows, rows[-1].entry_id if more else None)


def _pending_row(row: dict[str, Any], claim_idle_ms: int, now_s: float) -> PendingRow:
    idle_ms = int(row["time_since_delivered"])
    return PendingRow(
        entry_id=str(row["message_id"]), consumer=str(row["consumer"]),
        idle_s=idle_ms / 1000, deliveries=int(row["times_delivered"]),
        age_s=age_s(str(row["entry_id"]), now_s),
        claimable=idle_ms >= claim_idle_ms,
    )  # fmt: skip


def dead_page(
    client: Client, queue: Queue, wanted: DeadFilter, after: str | None
) -> DeadPage:
    """Dead letters newest first, from just older than `after`."""
    if wanted.active:
        return _filtered_page(client, queue, wanted, after)
    newest = dead_partitions.scan(client, queue, True, after, PAGE_SIZE + 1)
    found = list(itertools.islice(newest, PAGE_SIZE + 1))
    letters = [{"dead_id": dead_id, **fields} for dead_id, fields in found[:PAGE_SIZE]]
    more = len(found) > PAGE_SIZE
    return DeadPage(letters, letters[-1]["dead_id"] if more else None, len(letters))


def _filtered_page(
    client: Client, queue: Queue, wanted: DeadFilter, after: str | None
) -> DeadPage:
    scan = dead_partitions.scan(client, queue, True, after)
    letters: list[dict[str, str]] = []
    examined, last = 0, after
    for dead_id, fields in itertools.islice(scan, SCAN_BUDGET):
        examined, last = examined + 1, dead_id
        if dead_letters.matches(fields, wanted.task, wanted.error):
            letters.append({"dead_id": dead_id, **fields})
            if len(letters) == PAGE_SIZE:
                return DeadPage(letters, dead_id, examined)
    spent = examined == SCAN_BUDGET
    return DeadPage(letters, last if spent else None, examined, spent)


@dataclass(frozen=True, slots=True)
class Chosen:
    letters: list[dict[str, Any]]  # {"dead_id": ...}, what replay and purge take
    next_after: str | None = None  # where a repeat goes on; None: nothing left


def matching_letters(
    client: Client, queue: Queue, wanted: DeadFilter, after: str | None = None
) -> Chosen:
    """Dead letters matching, oldest first (the order they failed in), from just
    past `after`, within ACTION_LIMIT and ACTION_SCAN_BUDGET."""
    scan = dead_partitions.scan(client, queue, after=after)
    letters: list[dict[str, Any]] = []
    examined, last = 0, after
    for dead_id, fields in itertools.islice(scan, ACTION_SCAN_BUDGET):
        examined, last = examined + 1, dead_id
        if dead_letters.matches(fields, wanted.task, wanted.error):
            letters.append({"dead_id": dead_id})
            if len(letters) == ACTION_LIMIT:
                return Chosen(letters, dead_id)
    return Chosen(letters, last if examined == ACTION_SCAN_BUDGET else None)
