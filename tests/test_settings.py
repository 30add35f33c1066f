"""Both services' settings: defaults, environment names, bad values named at start."""

from pathlib import Path
from typing import Any

import pytest

from consumer import errors as consumer_errors
from consumer import settings as consumer_settings
from dispatcher import errors as dispatcher_errors
from dispatcher import settings as dispatcher_settings


def test_consumer_settings_defaults_follow_the_contract() -> None:
    s = consumer_settings.from_env({})
    assert (s.redis_url, s.stream, s.group) == (
        "redis://localhost:6379/0",
        "tasks",
        "workers",
    )
    assert (s.dead_letter_stream, s.max_deliveries, s.claim_idle_ms) == (
        "tasks:dead",
        5,
        30_000,
    )
    assert (s.metrics_port, s.log_level, s.task_modules) == (9100, "INFO", ())
    assert s.consumer_name.endswith(f"-{__import__('os').getpid()}")


def test_consumer_settings_read_the_environment() -> None:
    s = consumer_settings.from_env(
        {
            "STREAM": "jobs",
            "CONSUMER_NAME": "pod-a",
            "TASK_MODULES": "app.tasks, app.more ,",
            "MAX_DELIVERIES": "2",
            "REDIS_PASSWORD": "secret",
            "LOG_LEVEL": "debug",
        }
    )
    assert (s.stream, s.dead_letter_stream, s.consumer_name) == (
        "jobs",
        "jobs:dead",
        "pod-a",
    )
    assert s.task_modules == ("app.tasks", "app.more")
    assert (s.max_deliveries, s.redis_password, s.log_level) == (2, "secret", "DEBUG")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAX_DELIVERIES": "five"}, "MAX_DELIVERIES"),
        ({"MAX_DELIVERIES": "0"}, "MAX_DELIVERIES"),
        ({"CLAIM_IDLE_MS": "-1"}, "CLAIM_IDLE_MS"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"STREAM": " "}, "STREAM"),
        ({"BLOCK_MS": "20000", "SOCKET_TIMEOUT_S": "5"}, "SOCKET_TIMEOUT_S"),
    ],
)
def test_consumer_settings_refuse_bad_values_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(consumer_errors.SettingsError, match=named):
        consumer_settings.from_env(env)


TOKEN = "t0ken-of-sixteen-chars"


def test_dispatcher_settings_defaults_and_environment() -> None:
    assert dispatcher_settings.from_env({"DISPATCH_TOKENS": TOKEN}).port == 8000
    s = dispatcher_settings.from_env(
        {
            "PORT": "9000",
            "STREAM": "jobs",
            "MAX_MESSAGES": "5",
            "DISPATCH_TOKENS": TOKEN,
        }
    )
    assert (s.port, s.stream, s.max_messages) == (9000, "jobs", 5)
    assert s.dead_letter_stream == "jobs:dead"


def test_dispatcher_needs_tokens_or_an_explicit_open_loopback_run() -> None:
    with pytest.raises(dispatcher_errors.SettingsError, match="DISPATCH_TOKENS"):
        dispatcher_settings.from_env({})
    with pytest.raises(dispatcher_errors.SettingsError, match="needs HOST on loopback"):
        dispatcher_settings.from_env({"DISPATCH_ALLOW_ANONYMOUS": "1"})  # 0.0.0.0
    local = {"DISPATCH_ALLOW_ANONYMOUS": "1", "HOST": "127.0.0.1"}
    assert dispatcher_settings.from_env(local).allow_anonymous


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
    with pytest.raises(dispatcher_errors.SettingsError) as refused:
        dispatcher_settings.from_env({"DISPATCH_TOKENS": "short-secret"})
    assert "16+ characters" in str(refused.value)
    assert "short-secret" not in str(refused.value)  # never echo a token


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "0"}, "PORT"),
        ({"MAX_PACING_S": "-3"}, "MAX_PACING_S"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"STREAM": ""}, "STREAM"),
    ],
)
def test_dispatcher_settings_refuse_bad_values_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(dispatcher_errors.SettingsError, match=named):
        dispatcher_settings.from_env(env)


@pytest.mark.parametrize("service", [consumer_settings, dispatcher_settings])
def test_settings_read_the_redis_password_from_a_mounted_file(
    service: Any, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    env = {"REDIS_PASSWORD": "ignored", "REDIS_PASSWORD_FILE": str(secret)}
    env |= {"DISPATCH_TOKENS": TOKEN}  # the dispatcher needs one to start
    assert service.from_env(env).redis_password == "s3cret"
    errors = (consumer_errors.SettingsError, dispatcher_errors.SettingsError)
    with pytest.raises(errors, match="REDIS_PASSWORD_FILE: cannot read"):
        service.from_env({"REDIS_PASSWORD_FILE": str(tmp_path / "missing")})
