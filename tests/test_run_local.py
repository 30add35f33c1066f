"""`make run` (python -m harness): Redis (AOF), the dispatcher, consumers and, when
installed, Prometheus scraping them; `pipeline` finds it with no flags; Ctrl-C stops
all of it."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from harness.processes import ROOT, free_port, http_ok
from tests.conftest import eventually, require_redis_server
from tests.factories import call, drained


@pytest.mark.timeout(90)
def test_run_local_serves_the_seed_request_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path,
) -> None:
    require_redis_server()
    port, redis_port, metrics_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PORT": str(port), "REDIS_PORT": str(redis_port)}
    env |= {"RUN_DIR": str(tmp_path / ".run"), "WORKERS": "2"}
    env |= {"METRICS_PORT": str(metrics_port)}
    env.pop("REDIS_URL", None)
    command = [sys.executable, "-m", "harness"]
    output_path = tmp_path / "run.out"
    with (
        output_path.open("wb") as output_file,
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output_file, stderr=output_file
        ) as runner,
    ):
        try:
            drive(runner, port, redis_port, output_path)
            assert "XRANGE {tasks}:dead" in output_path.read_text()
        finally:
            if runner.poll() is None:
                runner.kill()
    output = output_path.read_text()
    print(output[-5000:])
    assert "curl -X POST http://localhost:" in output
    assert "XPENDING tasks workers" in output
    assert f"Console      http://127.0.0.1:{port}/ui/" in output
    assert (tmp_path / ".run" / "redis" / "appendonlydir").is_dir()


def drive(
    runner: subprocess.Popen[bytes], port: int, redis_port: int, output: Path
) -> None:
    eventually(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout_s=30)
    # redis-server, gunicorn's master and worker, two consumers, and Prometheus
    expected = 6 if shutil.which("prometheus") else 5
    stack = psutil.Process(runner.pid)
    children = eventually(lambda: whole_stack(stack, expected))
    body = json.dumps({"num_messages": 10, "delay": 0.1}).encode()
    request = urllib.request.Request(
        f"http://localhost:{port}/dispatch",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/", timeout=10) as page:
        assert "anonymous (loopback)" in page.read().decode()  # no sign-in, loopback
    with redis.Redis(port=redis_port, decode_responses=True) as client:
        eventually(lambda: drained(client, 10), 20)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
    # A second terminal, in the directory `make run` ran in: no flags, no exports.
    cli = ROOT / ".venv" / "bin" / "pipeline"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run(
        [str(cli), "status", "--json"], cwd=output.parent, env=env,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["redis_url"] == f"redis://127.0.0.1:{redis_port}/0"
    readme_examples(port, output.parent)
    if shutil.which("prometheus"):
        url = eventually(lambda: prometheus_url(output))
        eventually(lambda: targets_up(url) == 3, timeout_s=30)
    runner.send_signal(signal.SIGINT)  # what Ctrl-C does
    assert runner.wait(timeout=60) == 0
    assert not any(
        child.is_running() and child.status() != "zombie" for child in children
    )


def readme_block(marker: str) -> str:
    """The README's ```sh block holding `marker`, as written there."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [block] = [b for b in blocks if marker in b]
    return str(block)


def shell(script: str, port: int, cwd: Path) -> str:
    script = script.replace("localhost:8000", f"localhost:{port}")
    script = script.replace(".venv/bin/", f"{ROOT}/.venv/bin/")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, (script, done.stdout, done.stderr)
    return done.stdout


def readme_examples(port: int, cwd: Path) -> None:
    """README's quick start, run as written: a retried dispatch, a task by ID, and a
    send from Python."""
    block = readme_block("Idempotency-Key: order-42").splitlines(keepends=True)
    posts = "".join(block[:4])
    answers = shell(posts, port, cwd)
    first, again = (json.loads(line) for line in answers.strip().splitlines())
    assert first == again and len(first["task_ids"]) == 1  # written once
    [task_id] = first["task_ids"]
    rest = "".join(block[4:]).replace("<a task_id>", task_id)
    rest = rest.replace(
        "curl -X DELETE", "curl -s -o /dev/null -w '%{http_code}\\n' -X DELETE"
    )
    out = shell(rest, port, cwd)
    assert '"state"' in out and task_id in out
    python = shell(readme_block("send_task"), port, cwd)
    sent_id, state, result = python.split()
    assert "-" in sent_id and state in ("queued", "running", "succeeded")
    assert result == "5133"  # the primes below 50,000


def whole_stack(stack: psutil.Process, expected: int) -> list[psutil.Process]:
    children = stack.children(recursive=True)
    return children if len(children) >= expected else []


def prometheus_url(output: Path) -> str:
    found = re.search(r"Prometheus +(http://\S+)", output.read_text())
    return found.group(1) if found else ""


def targets_up(prometheus: str) -> int:
    """How many scrape targets (dispatcher, two consumers) Prometheus sees up."""
    with urllib.request.urlopen(
        f"{prometheus}/api/v1/query?query=up", timeout=5
    ) as answer:
        result = json.loads(answer.read())["data"]["result"]
    return sum(1 for sample in result if sample["value"][1] == "1")


@pytest.mark.timeout(90)
def test_run_local_a_second_ctrl_c_stops_everything_at_once(tmp_path: Path) -> None:
    require_redis_server()
    port, redis_port = free_port(), free_port()
    env = {**os.environ, "PORT": str(port), "REDIS_PORT": str(redis_port)}
    env |= {"RUN_DIR": str(tmp_path / ".run"), "WORKERS": "1", "METRICS_PORT": "0"}
    env.pop("REDIS_URL", None)
    with (
        (tmp_path / "run.out").open("wb") as output,
        subprocess.Popen([sys.executable, "-m", "harness"], cwd=ROOT, env=env,
                         stdout=output, stderr=output) as runner,
    ):  # fmt: skip
        try:
            eventually(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30)
            children = psutil.Process(runner.pid).children(recursive=True)
            # A task of a minute in hand: the first Ctrl-C would wait for it.
            body = {"task": "sleep", "payloads": [{"seconds": 60}]}
            status, _ = call(f"http://127.0.0.1:{port}/dispatch", body)
            assert status == 202
            with redis.Redis(port=redis_port) as client:
                eventually(lambda: _held(client) == 1)
            runner.send_signal(signal.SIGINT)
            eventually(lambda: b"stopping" in (tmp_path / "run.out").read_bytes())
            started = time.monotonic()
            runner.send_signal(signal.SIGINT)  # no more waiting
            runner.wait(timeout=15)
            assert time.monotonic() - started < 10
        finally:
            if runner.poll() is None:
                runner.kill()
    assert not any(c.is_running() and c.status() != "zombie" for c in children)


def _held(client: redis.Redis) -> int:
    try:
        return int(client.xpending("tasks", "workers")["pending"])
    except redis.ResponseError:
        return 0  # no group yet
