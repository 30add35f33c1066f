"""Replies as the consumer's reader parses them (consumer/message.py): XREADGROUP's as
Redis sends it (pipeline_core.connection.AS_SENT), or as redis-py converts it (a
cluster's nodes, XAUTOCLAIM); malformed ones refused."""

import dataclasses

import pytest
import redis

from consumer.errors import InvalidMessageError
from consumer.message import Message, encode_result, read_entries, to_messages
from pipeline_core.connection import ENCODING_ERRORS, replies_as_sent
from tests.factories import GROUP, STREAM, add_entry

FLAT = ["task", "demo", "payload", "{}"]
FIELDS = {"task": "demo", "payload": "{}"}


def test_message_flat_fields_and_redis_py_dicts_give_the_same_messages() -> None:
    flat = to_messages([["1-0", FLAT], ["1-1", [*FLAT, "id", "0-7"]]], 1)
    converted = to_messages([("1-0", FIELDS), ("1-1", {**FIELDS, "id": "0-7"})], 1)
    expected = [
        Message("1-0", FIELDS, 1, "demo"),
        Message("1-1", {**FIELDS, "id": "0-7"}, 1, "demo"),
    ]
    assert flat == converted == expected
    assert flat[1].task_id == "0-7"


def test_message_built_from_a_reply_is_frozen() -> None:
    [message] = to_messages([["1-0", FLAT]], 2)
    field = "deliveries"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(message, field, 3)


def test_message_counts_come_per_entry_or_as_one() -> None:
    entries = [["1-0", FLAT], ["1-1", ["task", "x"]]]
    per_id = to_messages(entries, {"1-1": 4})
    assert [(m.deliveries, m.task) for m in per_id] == [(1, "demo"), (4, "x")]
    assert [m.deliveries for m in to_messages(entries, 3)] == [3, 3]


def test_message_entry_deleted_while_pending_is_left_out() -> None:
    assert [m.entry_id for m in to_messages([["1-0", None], ["1-1", FLAT]], 1)] == [
        "1-1"
    ]


def test_message_read_entries_takes_resp3_resp2_and_empty_replies() -> None:
    entries = [["1-0", FLAT]]
    assert read_entries({"tasks": entries}) == entries
    assert read_entries([["tasks", entries]]) == entries
    assert read_entries(None) == read_entries({}) == read_entries([]) == []


@pytest.mark.parametrize(
    "reply",
    [
        {"a": [], "b": []},  # two streams
        [["a", []], ["b", []]],
        "tasks",
        42,
    ],
)
def test_message_read_entries_refuses_other_replies(reply: object) -> None:
    with pytest.raises(TypeError):
        read_entries(reply)


@pytest.mark.parametrize(
    "entries",
    [
        "1-0",  # not a list
        {"1-0": FLAT},
        [[b"1-0", FLAT]],  # undecoded ID
        [[1, FLAT]],
        [["1-0", ["task", "demo", "payload"]]],  # a name without its value
        [["1-0", ["task"]]],
        [["1-0", "task demo"]],  # fields neither a list nor a dict
        [["1-0", ("task", "demo")]],
    ],
)
def test_message_malformed_entries_are_refused(entries: object) -> None:
    with pytest.raises(TypeError):
        to_messages(entries, 1)


def test_message_entry_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises((TypeError, ValueError)):
        to_messages([["1-0"]], 1)


def test_message_reply_as_sent_by_redis_reads_like_redis_py_s(redis_url: str) -> None:
    plain = redis.Redis.from_url(
        redis_url, decode_responses=True, encoding_errors=ENCODING_ERRORS
    )
    plain.flushdb()
    raw = replies_as_sent(
        redis.Redis.from_url(
            redis_url, decode_responses=True, encoding_errors=ENCODING_ERRORS
        )
    )
    plain.xgroup_create(STREAM, GROUP, "0", mkstream=True)
    add_entry(plain, "demo", {"n": 1})
    plain.xadd(STREAM, {"task": "demo", "payload": "{}", "odd": b"\xff\xfe"})
    with plain.pipeline(transaction=False) as pipe:
        pipe.xreadgroup(GROUP, "a", {STREAM: ">"}, 1)
        pipe.xreadgroup(GROUP, "b", {STREAM: ">"}, 1)
        converted = pipe.execute()
    plain.xgroup_setid(STREAM, GROUP, "0")
    with raw.pipeline(transaction=False) as pipe:
        pipe.xreadgroup(GROUP, "a", {STREAM: ">"}, 1)
        pipe.xreadgroup(GROUP, "b", {STREAM: ">"}, 1)
        as_sent = pipe.execute()
    assert converted != as_sent  # redis-py's conversion is skipped
    ours = [to_messages(read_entries(reply), 1) for reply in as_sent]
    theirs = [to_messages(read_entries(reply), 1) for reply in converted]
    assert ours == theirs
    assert ours[1][0].fields["odd"].encode("utf-8", ENCODING_ERRORS) == b"\xff\xfe"
    assert read_entries(raw.xreadgroup(GROUP, "a", {STREAM: ">"}, 1, 10)) == []
    plain.close()
    raw.close()


def test_message_result_none_is_null_and_still_within_the_limit() -> None:
    assert encode_result(None, 100) == "null"
    assert encode_result({"a": [1, None]}, 100) == '{"a":[1,null]}'
    with pytest.raises(InvalidMessageError):
        encode_result(None, 3)
    with pytest.raises(InvalidMessageError):
        encode_result(float("nan"), 100)
