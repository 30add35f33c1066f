"""Every shipped alert seen firing for real: a Prometheus with the shipped rules scrapes
real services (prometheus/alerts.yml) while each alert's condition is made to happen.

The rules are the shipped ones with their time scaled down (every `for:` becomes 2 s and
every range `[Nm]` 15 s) so the suite waits seconds, not minutes; expressions and
thresholds are untouched. Old ages come from entry IDs dated in the past, exactly what
real waiting work looks like to the gauges."""

import json
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from cli.__main__ import main as pipeline
from harness.processes import ROOT, free_port
from harness.prometheus import start_prometheus
from harness.redis_server import EPHEMERAL
from harness.stack import Stack
from tests.conftest import eventually, require_tool
from tests.factories import DEAD, GROUP, STREAM, call

pytestmark = pytest.mark.timeout(180)


def scaled_rules(directory: Path) -> Path:
    rules = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())
    for rule in rules["groups"][0]["rules"]:
        if "for" in rule:
            rule["for"] = "2s"
        rule["expr"] = re.sub(r"\[\d+m\]", "[15s]", rule["expr"])
    path = directory / "alerts-scaled.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def firing(prometheus: str) -> set[str]:
    with urllib.request.urlopen(f"{prometheus}/api/v1/alerts", timeout=5) as answer:
        alerts = json.loads(answer.read())["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def fires(prometheus: str, alert: str, timeout_s: float = 30) -> None:
    eventually(lambda: alert in firing(prometheus), timeout_s=timeout_s, every_s=0.5)


def old_id(seconds_ago: float) -> str:
    return f"{int((time.time() - seconds_ago) * 1000)}-0"


class Watched:
    """A stack of our own (its own Redis) and a Prometheus scraping it."""

    def __init__(self, tmp: Path, consumers: int, **consumer_env: str) -> None:
        require_tool("prometheus", "prometheus")
        env = {"METRICS_PORT": "0", "CLAIM_IDLE_MS": "500", "BLOCK_MS": "100",
               "MAX_DELIVERIES": "1", "TASK_MODULES": "tests.e2e_tasks",
               "RECONNECT_MAX_DELAY_S": "0.2", **consumer_env}  # fmt: skip
        self.stack = Stack(tmp, consumers=0, consumer_env=env, redis_options=EPHEMERAL)
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self._start(tmp, consumers)
        except BaseException:
            self.stop()
            raise
        if self.stack.redis is None:
            raise TypeError("the stack starts its own Redis")
        self.redis = self.stack.redis
        self.client = self.redis.client()

    def _start(self, tmp: Path, consumers: int) -> None:
        self.stack.start()
        ports = [str(free_port()) for _ in range(consumers)]
        for number, port in enumerate(ports):
            self.stack.start_consumer(f"c{number}", METRICS_PORT=port)
        targets = {
            "dispatcher": [f"127.0.0.1:{self.stack.port}"],
            "consumer": [f"127.0.0.1:{p}" for p in ports],
        }
        self.process, self.url = start_prometheus(
            tmp / "prometheus", targets, interval="1s", rules=scaled_rules(tmp)
        )
        # Counters must be scraped at zero first, or their first rise is not seen.
        eventually(lambda: self.targets_up() == 1 + consumers, timeout_s=30)

    def targets_up(self) -> int:
        query = f"{self.url}/api/v1/query?query=up"
        with urllib.request.urlopen(query, timeout=5) as answer:
            result = json.loads(answer.read())["data"]["result"]
        return sum(1 for sample in result if sample["value"][1] == "1")

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait()
        if hasattr(self, "client"):
            self.client.close()
        self.stack.stop()


@pytest.fixture
def quiet(tmp_path: Path) -> Iterator[Watched]:
    """The dispatcher only: waiting work that no consumer takes."""
    watched = Watched(tmp_path, consumers=0)
    yield watched
    watched.stop()


def test_alerts_about_waiting_work_and_foreign_writers_fire(quiet: Watched) -> None:
    client, prometheus = quiet.client, quiet.url
    # Two entries enqueued 20 and 10 minutes ago, a group no consumer reads.
    stuck = client.xadd(STREAM, {"task": "demo", "payload": "{}"}, id=old_id(1200))
    client.xadd(STREAM, {"task": "demo", "payload": "{}"}, id=old_id(600))
    client.xgroup_create(STREAM, GROUP, "0")
    fires(prometheus, "PipelineBacklogTooOld")
    fires(prometheus, "PipelineBacklogWithoutConsumers")
    # A consumer that took the older one and never came back.
    client.xreadgroup(GROUP, "gone", {STREAM: ">"}, count=1)
    assert client.xpending(STREAM, GROUP)["min"] == stuck
    fires(prometheus, "PipelineEntriesStuckPending")
    # Another producer's ID an hour ahead; another group with 10,001 entries to read.
    with client.pipeline(transaction=False) as pipe:
        for _ in range(10_001):
            pipe.xadd(STREAM, {"task": "demo", "payload": "{}"})
        pipe.execute()
    client.xgroup_create(STREAM, "analytics", "0")
    client.xadd(STREAM, {"x": "1"}, id=f"{int(time.time() * 1000) + 3_600_000}-0")
    fires(prometheus, "PipelineStreamIdsFromAnotherProducer")
    fires(prometheus, "PipelineOtherGroupHoldsTheStream")
    # Redis filled past the budget (80% of a maxmemory just above what is used).
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 100_000)
    fires(prometheus, "PipelineMemoryNearBudget")
    fires(prometheus, "PipelineMemoryOverBudget")
    status, body = call(f"{quiet.stack.base_url}/dispatch", {"num_messages": 1})
    assert (status, body["error"]) == (507, "redis memory over budget")
    client.config_set("maxmemory", 0)
    # Waiting work wiped by a stolen password (XTRIM MAXLEN: no ACL refuses it).
    client.xtrim(STREAM, maxlen=0, approximate=False)
    fires(prometheus, "PipelineWorkDeleted")
    # Redis gone, then the dispatcher gone: the state cannot be read, then not scraped.
    quiet.redis.kill()
    fires(prometheus, "PipelineRedisUnreachable")
    assert quiet.stack.dispatcher is not None
    quiet.stack.dispatcher.stop(show_log=False)
    fires(prometheus, "PipelineStateNotScraped")


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[Watched]:
    """The dispatcher and one consumer (MAX_DELIVERIES 1)."""
    watched = Watched(tmp_path, consumers=1)
    yield watched
    watched.stop()


def test_alerts_about_failing_work_and_a_refusing_redis_fire(
    busy: Watched,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, prometheus, base = busy.client, busy.url, busy.stack.base_url
    fixed = tmp_path / "fixed"
    bug = {"task": "fails_until", "payloads": [{"fixed": str(fixed)}]}
    assert call(f"{base}/dispatch", bug)[0] == 202
    fires(prometheus, "PipelineDeadLetters")
    # Once the alert's window has passed, a replay of the fixed task must not fire it,
    # though the dead-letter stream's length drops.
    eventually(lambda: "PipelineDeadLetters" not in firing(prometheus), timeout_s=40)
    fixed.touch()
    monkeypatch.setenv("REDIS_URL", busy.stack.url)
    assert pipeline(["dead", "replay", "--all", "--json"]) == 0
    capsys.readouterr()
    eventually(lambda: client.xlen(DEAD) == 0 and _drained(client))
    deadline = time.monotonic() + 6  # two evaluations past the scrape of the replay
    while time.monotonic() < deadline:
        assert not {"PipelineDeadLetters", "PipelineDeadLettersDeleted"} & firing(
            prometheus
        )  # the replay counted the dead letter it deleted
        time.sleep(0.5)
    # A dead letter, then all wiped as a stolen consumer password can (XADD MAXLEN 0).
    client.xadd(DEAD, {"task": "demo", "payload": "{}", "error": "x"}, maxlen=0)
    fires(prometheus, "PipelineDeadLettersDeleted")
    _results_dropped(busy)
    fires(prometheus, "PipelineResultsDropped")
    client.delete(STREAM)  # the group with it: consumers create it again, and say so
    fires(prometheus, "PipelineGroupRecreated")
    client.replicaof("127.0.0.1", busy.stack.port)  # a replica of nobody: READONLY
    fires(prometheus, "PipelineRedisRefusing")
    client.replicaof("NO", "ONE")


def _results_dropped(busy: Watched) -> None:
    """Entries run while Redis is at maxmemory: acknowledged, their results dropped."""
    [consumer] = busy.stack.consumers.values()
    consumer.signal(signal.SIGSTOP)
    assert call(f"{busy.stack.base_url}/dispatch", {"num_messages": 3})[0] == 202
    busy.client.config_set("maxmemory", 1)
    consumer.signal(signal.SIGCONT)
    eventually(lambda: _drained(busy.client), timeout_s=20)
    busy.client.config_set("maxmemory", 0)


def _drained(client: redis.Redis) -> bool:
    groups = client.xinfo_groups(STREAM)
    return bool(groups) and groups[0]["lag"] == 0 and groups[0]["pending"] == 0


SEEN_FIRING = {  # by the two tests above, in order
    "PipelineBacklogTooOld", "PipelineBacklogWithoutConsumers",
    "PipelineEntriesStuckPending", "PipelineStreamIdsFromAnotherProducer",
    "PipelineOtherGroupHoldsTheStream", "PipelineMemoryNearBudget",
    "PipelineMemoryOverBudget", "PipelineRedisUnreachable", "PipelineStateNotScraped",
    "PipelineDeadLetters", "PipelineResultsDropped", "PipelineGroupRecreated",
    "PipelineRedisRefusing", "PipelineWorkDeleted", "PipelineDeadLettersDeleted",
}  # fmt: skip


def test_every_shipped_alert_is_made_to_fire_here() -> None:
    rules = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())
    assert {rule["alert"] for rule in rules["groups"][0]["rules"]} == SEEN_FIRING
