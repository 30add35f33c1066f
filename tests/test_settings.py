"""Settings of every process (dispatcher, consumer, CLI): defaults, environment names,
and bad values refused the same way by all three (pipeline_core.env)."""

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from cli import settings as cli_settings
from consumer import settings as consumer_settings
from dispatcher import settings as dispatcher_settings
from pipeline_core.env import SettingsError
from pipeline_core.keys import Queue, check_cluster_slots, queue_from_env, slot

TOKEN = "t0ken-of-sixteen-chars"
# Every process reads the shared variables; the dispatcher needs a token to start.
PROCESSES: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "dispatcher": lambda env: dispatcher_settings.from_env(
        {"DISPATCH_TOKENS": TOKEN, **env}
    ),
    "consumer": consumer_settings.from_env,
    "cli": cli_settings.from_env,
}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAM": ""}, "STREAM must not be empty"),
        ({"STREAM": "  "}, "STREAM must not be empty"),
        ({"GROUP": ""}, "GROUP must not be empty"),
        ({"DEAD_LETTER_STREAM": " "}, "DEAD_LETTER_STREAM must not be empty"),
        ({"REDIS_URL": ""}, "REDIS_URL must not be empty"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING"),
        ({"REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER must be 1 or 0"),
        ({"STREAM": "ta}sks{"}, "STREAM 'ta}sks{': use '{' and '}' only around"),
        ({"REDIS_PASSWORD_FILE": "/nonexistent"}, "REDIS_PASSWORD_FILE: cannot read"),
    ],
)
@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_every_process_refuses_a_bad_shared_value_the_same_way(
    process: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        PROCESSES[process](env)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLAIM_IDLE_MS": "0"}, "CLAIM_IDLE_MS must be between 1 and inf, got '0'"),
        ({"CLAIM_IDLE_MS": "-1"}, "CLAIM_IDLE_MS must be between 1 and inf"),
        ({"CLAIM_IDLE_MS": "soon"}, "CLAIM_IDLE_MS must be a int, got 'soon'"),
    ],
)
@pytest.mark.parametrize("process", ["consumer", "cli"])
def test_durations_read_by_several_processes_are_refused_alike(
    process: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        PROCESSES[process](env)


@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_every_process_shares_the_queue_names_and_redis_settings(
    process: str, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    env = {"STREAM": "jobs", "GROUP": "crew", "REDIS_PASSWORD": "ignored"}
    env |= {"REDIS_PASSWORD_FILE": str(secret), "REDIS_CLUSTER": "1"}
    settings = PROCESSES[process](env)
    assert settings.queue == Queue("jobs", "crew", "{jobs}:dead")
    assert (settings.redis.password, settings.redis.cluster) == ("s3cret", True)
    defaults = PROCESSES[process]({})
    assert defaults.queue == Queue("tasks", "workers", "{tasks}:dead")
    assert defaults.redis.url == "redis://localhost:6379/0"
    assert defaults.redis.cluster is None  # ask Redis at start


def test_every_key_of_a_queue_shares_the_stream_slot() -> None:
    queue = queue_from_env({})
    assert queue.results_key("7200000-3") == "{tasks}:results:120"
    assert slot(queue.dead_letter_stream) == slot(queue.results_key("1-0"))
    assert slot(queue.stream) == slot(queue.dead_letter_stream) == slot("tasks")
    tagged = queue_from_env({"STREAM": "app{q1}"})
    assert tagged.dead_letter_stream == "app{q1}:dead"
    assert slot(tagged.results_key("1-0")) == slot("app{q1}") == slot("q1")


def test_a_dead_letter_stream_in_another_slot_is_refused_on_a_cluster() -> None:
    queue = queue_from_env({"DEAD_LETTER_STREAM": "tasks:dead"})  # slot 5955, not 9114
    with pytest.raises(SettingsError, match=re.escape("name it '{tasks}:dead'")):
        check_cluster_slots(queue)
    check_cluster_slots(queue_from_env({}))  # the default is fine


def test_consumer_settings_defaults_follow_the_contract() -> None:
    s = consumer_settings.from_env({})
    assert (s.max_deliveries, s.claim_idle_ms) == (5, 30_000)
    assert (s.metrics_port, s.log_level, s.task_modules) == (9100, "INFO", ())
    assert s.metrics_host == "0.0.0.0"  # the pod's address: Prometheus, the kubelet
    assert s.consumer_name.endswith(f"-{os.getpid()}")
    assert s.batch_size is None  # adaptive (consumer/batching.py)


def test_consumer_settings_read_the_environment() -> None:
    s = consumer_settings.from_env(
        {"CONSUMER_NAME": "pod-a", "TASK_MODULES": "app.tasks, app.more ,",
         "MAX_DELIVERIES": "2", "LOG_LEVEL": "debug", "BATCH_SIZE": "25",
         "METRICS_HOST": "127.0.0.1"}
    )  # fmt: skip
    assert (s.consumer_name, s.task_modules) == ("pod-a", ("app.tasks", "app.more"))
    assert s.metrics_host == "127.0.0.1"
    assert (s.max_deliveries, s.log_level, s.batch_size) == (2, "DEBUG", 25)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAX_DELIVERIES": "five"}, "MAX_DELIVERIES"),
        ({"MAX_DELIVERIES": "0"}, "MAX_DELIVERIES"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
        ({"BATCH_SIZE": "0"}, "BATCH_SIZE"),  # unset it to have reads sized adaptively
        ({"CONSUMER_NAME": ""}, "CONSUMER_NAME"),
        ({"BLOCK_MS": "20000", "SOCKET_TIMEOUT_S": "5"}, "SOCKET_TIMEOUT_S"),
    ],
)
def test_consumer_settings_refuse_bad_values_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        consumer_settings.from_env(env)


def test_dispatcher_settings_defaults_and_environment() -> None:
    assert dispatcher_settings.from_env({"DISPATCH_TOKENS": TOKEN}).port == 8000
    s = dispatcher_settings.from_env(
        {"PORT": "9000", "MAX_MESSAGES": "5", "DISPATCH_TOKENS": TOKEN}
    )
    assert (s.port, s.max_messages) == (9000, 5)


def test_dispatcher_needs_tokens_or_an_explicit_open_loopback_run() -> None:
    with pytest.raises(SettingsError, match="DISPATCH_TOKENS"):
        dispatcher_settings.from_env({})
    with pytest.raises(SettingsError, match="needs HOST on loopback"):
        dispatcher_settings.from_env({"DISPATCH_ALLOW_ANONYMOUS": "1"})  # 0.0.0.0
    local = {"DISPATCH_ALLOW_ANONYMOUS": "1", "HOST": "127.0.0.1"}
    assert dispatcher_settings.from_env(local).allow_anonymous
    # Beside tokens, it would switch them off: refused, whatever HOST says.
    with pytest.raises(SettingsError, match="switches tokens off"):
        dispatcher_settings.from_env({**local, "DISPATCH_TOKENS": TOKEN})


def test_dispatcher_tokens_come_from_a_list_or_a_file_and_must_be_long(
    tmp_path: Path,
) -> None:
    listed = dispatcher_settings.from_env(
        {"DISPATCH_TOKENS": f" {TOKEN}, {TOKEN}-new ,"}
    )
    assert listed.tokens == (TOKEN, f"{TOKEN}-new")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# rotated 2026-11\n{TOKEN}\n\n{TOKEN}-new\n")
    from_file = dispatcher_settings.from_env({"DISPATCH_TOKENS_FILE": str(tokens)})
    assert from_file.tokens == (TOKEN, f"{TOKEN}-new")
    with pytest.raises(SettingsError) as refused:
        dispatcher_settings.from_env({"DISPATCH_TOKENS": "short-secret"})
    assert "16+ characters" in str(refused.value)
    assert "short-secret" not in str(refused.value)  # never echo a token


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "0"}, "PORT"),
        ({"MAX_PACING_S": "-3"}, "MAX_PACING_S"),
        ({"DISPATCH_ALLOW_ANONYMOUS": "sure"}, "DISPATCH_ALLOW_ANONYMOUS"),
    ],
)
def test_dispatcher_settings_refuse_bad_values_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        dispatcher_settings.from_env({"DISPATCH_TOKENS": TOKEN, **env})


def test_cli_finds_the_redis_that_make_run_chose(tmp_path: Path) -> None:
    recorded = tmp_path / "pipeline.env"
    recorded.write_text("# by make run\nREDIS_URL=redis://127.0.0.1:6381/0\n")
    found = cli_settings.environment({}, recorded)
    assert found.redis.url == "redis://127.0.0.1:6381/0"
    mine = cli_settings.environment({"REDIS_URL": "redis://elsewhere:6379/0"}, recorded)
    assert mine.redis.url == "redis://elsewhere:6379/0"  # the environment wins
