"""What the console reads and writes in Redis (a real one: pending lists and stream
ranges): pages by exclusive cursors, the bounded filtered scan, the choice of letters
for an action, and the throughput samples and rates."""

import threading

import pytest
import redis
from redis.typing import EncodableT, FieldT

from dispatcher.console import data, stats
from dispatcher.console.data import DeadFilter
from harness.processes import free_port
from pipeline_core.connection import NO_RETRY
from tests.factories import (
    DEAD,
    GROUP,
    QUEUE,
    STREAM,
    add_entry,
    deliver_to,
    entries,
    entry_ids,
)


def dead_letters(client: redis.Redis, count: int) -> list[str]:
    """`count` dead letters, tasks demo and resize in turn, errors "boom <n>"."""
    with client.pipeline(transaction=False) as pipe:
        for n in range(count):
            fields: dict[FieldT, EncodableT] = {
                "task": "resize" if n % 2 else "demo", "payload": "{}",
                "source_id": f"{n + 1}-0", "error": f"boom {n}", "deliveries": "5",
            }  # fmt: skip
            pipe.xadd(DEAD, fields)
        ids = pipe.execute()
    return [str(i) for i in ids]


def test_pending_page_walks_the_pending_list_by_exclusive_cursor(
    r: redis.Redis,
) -> None:
    for _ in range(120):
        add_entry(r, "demo")
    r.xgroup_create(STREAM, GROUP, "0")
    # pending: 70 entries held by c1, then 50 by c2, all idle a moment
    first_ids, second_ids = deliver_to(r, "c1", 70), deliver_to(r, "c2", 50)
    seen, after = [], None
    while True:
        page = data.pending_page(r, QUEUE, None, after, claim_idle_ms=60_000)
        seen += [row.entry_id for row in page.rows]
        assert len(page.rows) <= data.PAGE_SIZE
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == first_ids + second_ids  # oldest first, no entry twice
    mine = data.pending_page(r, QUEUE, "c2", None, claim_idle_ms=0)
    assert [row.entry_id for row in mine.rows] == second_ids[: data.PAGE_SIZE]
    assert all(row.claimable and row.deliveries == 1 for row in mine.rows)
    assert not any(row.claimable for row in page.rows)  # idle < 60 s


def test_dead_page_pages_newest_first(r: redis.Redis) -> None:
    ids = dead_letters(r, 120)
    newest_first = list(reversed(ids))
    first = data.dead_page(r, QUEUE, DeadFilter(), None)
    second = data.dead_page(r, QUEUE, DeadFilter(), first.next_after)
    third = data.dead_page(r, QUEUE, DeadFilter(), second.next_after)
    pages = [first, second, third]
    assert [d["dead_id"] for p in pages for d in p.letters] == newest_first
    assert third.next_after is None


def test_dead_page_filter_stops_at_its_budget_and_continues_from_there(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "SCAN_BUDGET", 100)
    ids = dead_letters(r, 300)
    needle = r.xadd(DEAD, {"task": "demo", "error": "Needle in a haystack"})
    ids_after = dead_letters(r, 150)  # newer than the needle: examined first
    wanted = DeadFilter(error="NEEDLE")
    first = data.dead_page(r, QUEUE, wanted, None)
    # the newest 100 examined, none matched: the page says so and offers to go on
    assert (first.letters, first.examined, first.budget_spent) == ([], 100, True)
    assert first.next_after == ids_after[50]
    pages = [first]
    while pages[-1].next_after:  # "continue the search" until the oldest
        pages.append(data.dead_page(r, QUEUE, wanted, pages[-1].next_after))
    assert [d["dead_id"] for page in pages for d in page.letters] == [needle]
    assert sum(page.examined for page in pages) == 451  # each examined once
    assert len(pages) == 5 and not pages[-1].budget_spent
    by_task = data.dead_page(r, QUEUE, DeadFilter(task="resize"), None)
    assert {d["task"] for d in by_task.letters} == {"resize"}
    assert len(by_task.letters) == data.PAGE_SIZE and by_task.examined == 99
    assert len(ids) == 300


def test_matching_letters_are_oldest_first_and_go_on_from_where_they_stopped(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "ACTION_LIMIT", 40)
    monkeypatch.setattr(data, "ACTION_SCAN_BUDGET", 60)
    ids = dead_letters(r, 100)
    # "demo" is every other letter: 30 in the 60 examined, then 20 in the rest
    first = data.matching_letters(r, QUEUE, DeadFilter(task="demo"))
    assert [c["dead_id"] for c in first.letters] == ids[0:60:2]
    assert first.next_after == ids[59]
    rest = data.matching_letters(r, QUEUE, DeadFilter(task="demo"), first.next_after)
    assert [c["dead_id"] for c in rest.letters] == ids[60:100:2]
    assert rest.next_after is None
    # every letter matches: the action limit (40) stops it before the budget
    capped = data.matching_letters(r, QUEUE, DeadFilter(error="BOOM"))
    assert len(capped.letters) == 40 and capped.next_after == ids[39]


def test_stats_one_sample_per_interval_whoever_asks(r: redis.Redis) -> None:
    assert not stats.sample_once(r, QUEUE)  # no stream yet: nothing to count
    r.delete(stats.lock_key(QUEUE))
    for _ in range(5):
        add_entry(r, "demo")
    r.xgroup_create(STREAM, GROUP, "0")
    deliver_to(r, "c1", 3)
    r.xack(STREAM, GROUP, *entry_ids(r)[:2])
    # two processes (here: two calls) within one interval: one sample
    assert stats.sample_once(r, QUEUE) and not stats.sample_once(r, QUEUE)
    [(_, sample)] = entries(r, stats.stats_key(QUEUE))
    # 5 added; 3 delivered, 2 of them acked; backlog: 2 undelivered + 1 pending
    assert sample == {"dispatched": "5", "acked": "2", "backlog": "3"}
    assert 0 < int(r.pttl(stats.lock_key(QUEUE))) <= stats.LOCK_MS


def test_stats_throughput_turns_counter_deltas_into_rates(r: redis.Redis) -> None:
    key, now_ms = stats.stats_key(QUEUE), 2_000_000_000_000
    samples = [(-60_000, 100, 90), (-55_000, 150, 100), (-50_000, 160, 160),
               (-10_000, 900, 900), (-5_000, 0, 0), (0, 20, 10)]  # fmt: skip
    r.xadd(
        key, {"dispatched": 1, "acked": 1}, id=f"{now_ms - 16 * 60_000}-0"
    )  # too old
    for offset, dispatched, acked in samples:
        fields: dict[FieldT, EncodableT] = {
            "dispatched": dispatched,
            "acked": acked,
            "backlog": dispatched - acked,
        }
        r.xadd(key, fields, id=f"{now_ms + offset}-0")
    answer = stats.throughput(r, QUEUE, now_ms)
    rates = [(p["dispatched"], p["acked"], p["backlog"]) for p in answer["points"]]
    assert rates == [
        (10.0, 2.0, 50),  # 50 and 10 more in 5 s
        (2.0, 12.0, 0),
        (None, None, 0),  # 40 s without a sample: a gap, not a rate
        (None, None, 0),  # counters went down: the stream was recreated
        (4.0, 2.0, 10),
    ]
    assert answer["window_ms"] == stats.WINDOW_MS


def test_stats_sampler_keeps_going_through_redis_errors_and_stops_on_request(
    r: redis.Redis,
) -> None:
    add_entry(r, "demo")
    nowhere = redis.Redis(port=free_port(), socket_connect_timeout=0.1, retry=NO_RETRY)
    stopping = threading.Event()
    stopping.set()  # one round, then stop
    stats.Sampler(nowhere, QUEUE, stopping).run()  # logs, does not raise
    stats.Sampler(r, QUEUE, stopping).run()
    assert r.xlen(stats.stats_key(QUEUE)) == 1
