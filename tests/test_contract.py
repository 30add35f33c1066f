"""The wire format: published with the dispatcher's code, read with the consumer's."""

from typing import Any

import redis

from consumer import tasks as consumer_tasks
from consumer.message import decode_payload
from consumer.message import results_key as consumer_results_key
from dispatcher import validation
from dispatcher.publisher import encode_payload, publish
from dispatcher.publisher import results_key as dispatcher_results_key
from tests.factories import make_worker


def test_contract_dispatcher_entries_read_back_by_the_consumer(r: redis.Redis) -> None:
    payloads: list[dict[str, Any]] = [
        {"path": "a.png"},
        {"nested": {"ok": True, "n": None}},
    ]
    entry_ids = publish(r, "tasks", "resize", [encode_payload(p) for p in payloads])
    messages = make_worker(r, {}).reader.read_new()
    assert [m.entry_id for m in messages] == entry_ids
    assert [m.task for m in messages] == ["resize", "resize"]
    assert [decode_payload(m) for m in messages] == payloads
    assert [m.deliveries for m in messages] == [1, 1]


def test_contract_results_key_is_the_same_on_both_sides() -> None:
    for entry_id in ("1-2", "1795959378799-0", "3599999-7", "3600000-0"):
        key = consumer_results_key("tasks", entry_id)
        assert key == dispatcher_results_key("tasks", entry_id)
    assert consumer_results_key("tasks", "3599999-7") == "tasks:results:0"
    assert consumer_results_key("tasks", "3600000-0") == "tasks:results:1"


def test_contract_task_names_follow_the_same_rule() -> None:
    assert consumer_tasks.TASK_NAME.pattern == validation.TASK_NAME.pattern
    assert validation.DEFAULT_TASK in consumer_tasks.TASKS
    assert {"demo", "primes", "sleep"} <= set(consumer_tasks.TASKS)
