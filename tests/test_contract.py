"""The contracts between processes, tied by behaviour: entries published with the
dispatcher's code are read with the consumer's; dead letters written with the
consumer's code are listed, shown and replayed with the code `pipeline dead` runs
(pipeline_core.dead_letters)."""

from typing import Any

import pytest
import redis

from consumer import tasks as consumer_tasks
from consumer.errors import TaskModuleError
from dispatcher import validation
from dispatcher.errors import InvalidPayloadError
from dispatcher.publisher import publish
from dispatcher.settings import Settings
from pipeline_core import dead_letters
from pipeline_core.wire import TASK_NAME, decode_payload, encode_payload
from tests.factories import QUEUE, add_entry, make_worker, pending


def test_contract_dispatcher_entries_read_back_by_the_consumer(r: redis.Redis) -> None:
    payloads: list[dict[str, Any]] = [
        {"path": "a.png"},
        {"nested": {"ok": True, "n": None}},
    ]
    entry_ids = publish(r, "tasks", "resize", [encode_payload(p) for p in payloads])
    messages = make_worker(r, {}).reader.read_new()
    assert [m.entry_id for m in messages] == entry_ids
    assert [m.task for m in messages] == ["resize", "resize"]
    assert [decode_payload(m.fields["payload"]) for m in messages] == payloads
    assert [m.deliveries for m in messages] == [1, 1]


def test_contract_consumer_dead_letters_are_listed_shown_and_replayed_by_the_cli(
    r: redis.Redis,
) -> None:
    def fails(n: int) -> None:
        raise ValueError(f"cannot handle {n}")

    worker = make_worker(r, {"fails": fails}, max_deliveries=1)
    source_id = add_entry(r, "fails", {"n": 7})
    worker.poll_once()
    # Pending list: empty; the entry sits in the dead-letter stream.
    [letter] = dead_letters.letters(r, QUEUE, task="fails", error="cannot handle 7")
    assert (letter["source_id"], letter["deliveries"]) == (source_id, "1")
    assert letter["error"] == "ValueError: cannot handle 7"
    assert letter["consumer"] == "c1"
    shown = dead_letters.show(r, QUEUE, letter["dead_id"])
    assert shown["payload"] == {"n": 7}
    [moved] = dead_letters.replay(r, QUEUE, [letter])
    # The replayed entry is the original task again (its task ID kept), read by
    # the consumer's own code.
    [message] = make_worker(r, {}, consumer_name="c2").reader.read_new()
    assert message.entry_id == moved["entry_id"]
    assert (message.task, message.fields) == (
        "fails",
        {"task": "fails", "payload": '{"n": 7}', "id": source_id},
    )
    assert [row["consumer"] for row in pending(r)] == ["c2"]


def test_contract_results_key_is_the_one_the_dispatcher_reads() -> None:
    assert QUEUE.results_key("59999-7") == "{tasks}:results:0"
    assert QUEUE.results_key("60000-0") == "{tasks}:results:1"


def test_contract_task_names_follow_the_same_rule() -> None:
    for name in ("contract-probe", "app.tasks:contract_probe-2"):
        assert TASK_NAME.fullmatch(name)
        validation.parse_dispatch({"task": name, "payloads": [{}]}, Settings())
        try:
            consumer_tasks.task(name=name)(lambda: None)
        finally:
            consumer_tasks.TASKS.pop(name, None)
    for name in ("", "9lives", "white space", "x" * 129):
        with pytest.raises(InvalidPayloadError, match="task"):
            validation.parse_dispatch({"task": name, "payloads": [{}]}, Settings())
        with pytest.raises(TaskModuleError, match="task name"):
            consumer_tasks.task(name=name)(lambda: None)
    assert validation.DEFAULT_TASK in consumer_tasks.TASKS
    assert {"demo", "primes", "sleep"} <= set(consumer_tasks.TASKS)
