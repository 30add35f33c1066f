"""Factories for tests: settings with tiny timings, workers, and raw entries."""

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import redis
from redis.typing import EncodableT, FieldT

from cli.__main__ import main as pipeline
from consumer.message import to_messages
from consumer.settings import Settings
from consumer.worker import Worker
from pipeline_core.connection import Client
from pipeline_core.keys import Queue

STREAM, GROUP, DEAD = "tasks", "workers", "{tasks}:dead"
# A consumer process's settings for tests: claims, reads, trims in tenths of a second.
FAST_CONSUMER = {
    "CLAIM_IDLE_MS": "500",
    "CLAIM_INTERVAL_MS": "50",
    "BLOCK_MS": "100",
    "METRICS_PORT": "0",
    "TRIM_INTERVAL_MS": "100",
}
QUEUE = Queue(STREAM, GROUP, DEAD)
DELAYED = "{tasks}:delayed"  # pipeline_core/delayed.py


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "queue": QUEUE,
        "consumer_name": "c1",
        "block_ms": 10,
        "claim_idle_ms": 20,
        "claim_interval_ms": 0,
        "trim_interval_ms": 0,
        "ack_interval_ms": 60_000,
        "max_deliveries": 3,
        "metrics_port": 0,
        # A fixed COUNT, so a story knows what one poll reads; the adaptive one (None,
        # the default) is told in test_consumer_batching.py.
        "batch_size": 10,
    }
    return Settings(**{**values, **overrides})


def make_worker(
    client: Client, tasks: Mapping[str, Callable[..., Any]], **overrides: Any
) -> Worker:
    worker = Worker(client, make_settings(**overrides), tasks)
    worker.ensure_group()
    return worker


def add_entry(
    client: Client,
    task: str,
    payload: object = None,
    raw: dict[str, str] | None = None,
) -> str:
    """XADD an entry in the wire format; `raw` fields replace the encoded ones."""
    fields: dict[FieldT, EncodableT] = {
        "task": task,
        "payload": json.dumps({} if payload is None else payload),
    }
    fields.update(raw or {})
    entry_id = client.xadd(STREAM, fields)
    assert isinstance(entry_id, str)
    return entry_id


def pending(client: Client) -> list[dict[str, Any]]:
    """The pending list, oldest first: message_id, consumer, idle, deliveries."""
    try:
        rows = client.xpending_range(STREAM, GROUP, "-", "+", 1000)
    except redis.ResponseError:
        return []  # NOGROUP: no consumer has created the group yet
    assert isinstance(rows, list)
    return rows


def deliver_to(client: Client, consumer: str, count: int = 100) -> list[str]:
    """XREADGROUP as another consumer (one that then crashes); returns the IDs."""
    reply = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
    assert isinstance(reply, list)
    return [entry_id for _stream, entries in reply for entry_id, _fields in entries]


def entries(client: Client, stream: str = STREAM) -> list[tuple[str, dict[str, str]]]:
    """XRANGE of a whole stream, narrowed to decoded strings."""
    return [(m.entry_id, m.fields) for m in to_messages(client.xrange(stream), 0)]


def entry_ids(client: Client, stream: str = STREAM) -> list[str]:
    return [entry_id for entry_id, _ in entries(client, stream)]


def dead_letters(client: Client) -> list[dict[str, str]]:
    return [fields for _, fields in entries(client, DEAD)]


def drained(client: Client, count: int) -> bool:
    """Every one of `count` entries was delivered and nothing is pending."""
    groups = client.xinfo_groups(STREAM) if client.exists(STREAM) else []
    return (
        bool(groups)
        and groups[0]["entries-read"] == count
        and groups[0]["pending"] == 0
    )


def result_of(client: Client, entry_id: str) -> str | None:
    """The stored result (JSON) of an entry, or None."""
    stored = client.hget(QUEUE.results_key(entry_id), entry_id)
    assert stored is None or isinstance(stored, str)
    return stored


def call(url: str, body: object | None = None) -> tuple[int, dict[str, Any]]:
    """GET, or POST a JSON body; the status and the JSON answer, errors included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`pipeline` with argv, in process: its exit code, stdout and stderr."""
    code = pipeline(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """`pipeline ... --json`, which must succeed: its output parsed."""
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)
