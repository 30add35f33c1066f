"""Both images, built by podman and run as the rendered k8s/base Deployments say
(`podman kube play`): the runtime settings, the probes, the seed's curl, `pipeline
status` in a consumer, and SIGTERM. What the play cannot cover: docs/images.md."""

import json
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.processes import ROOT
from harness.redis_server import RedisServer
from scripts import images
from tests.conftest import eventually, require_tool
from tests.k8s_manifests import Doc, find
from tests.kube_play import PODS, Pod, plan, play, podman, remove_everything, render

# A first build on a new machine makes the base image with debootstrap (minutes).
pytestmark = pytest.mark.timeout(600)

TOOLS = ("podman", "runc", "catatonit", "debootstrap")
ROLES = ("dispatcher", "consumer", "operator")
TOKEN = "tok-" + "5" * 28


@dataclass(frozen=True, slots=True)
class Stack:
    dispatcher: Pod
    consumers: tuple[Pod, ...]
    config: dict[str, str]  # the ConfigMap, as played
    operator: redis.Redis  # the Redis user people use
    operator_password: str

    def call(self, path: str, body: object = None) -> tuple[int, Any]:
        """The dispatcher over HTTP, with a bearer token, as curl would."""
        url = self.dispatcher.url(path)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method="POST" if data else "GET"
        )
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {TOKEN}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture(scope="session")
def manifests() -> list[Doc]:
    return render(require_tool("kubectl", "kubectl"))


@pytest.fixture(scope="session")
def built(manifests: list[Doc]) -> str:
    """Both images under the names the manifests use, on the local base (made once per
    machine); their layers cached between runs. Returns the tag."""
    for tool in TOOLS:
        require_tool(tool, tool)
    tag = images_tag(manifests)
    base = images.choose_base("podman", "local")
    for service in images.SERVICES:
        images.build("podman", service, tag, base, quiet=True)
    return tag


def images_tag(manifests: list[Doc]) -> str:
    """The tag of the manifests' images, which are `make images`' names."""
    named = {
        service: Pod(find(manifests, "Deployment", service)).spec["image"]
        for service in images.SERVICES
    }
    tag: str = named["dispatcher"].rsplit(":", 1)[-1]
    assert named == {s: images.image_name(s, tag) for s in images.SERVICES}
    return tag


def acl_redis(workdir: Path, passwords: dict[str, str]) -> RedisServer:
    """A private redis-server with k8s/base's users, rendered by its own script."""
    acl_dir = ROOT / "k8s" / "base" / "redis-acl"
    (workdir / "passwords").mkdir()
    for role, password in passwords.items():
        (workdir / "passwords" / role).write_text(password)
    rendered = workdir / "users.acl"
    command = ["sh", str(acl_dir / "render-acl.sh"), str(acl_dir / "users.acl")]
    subprocess.run([*command, str(workdir / "passwords"), str(rendered)], check=True)
    server = RedisServer(workdir / "redis", extra=["--aclfile", str(rendered)])
    server.start()
    return server


@pytest.fixture(scope="module")
def stack(
    built: str, manifests: list[Doc], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("kube-play")
    passwords = {role: f"pw-{role}-{secrets.token_hex(12)}" for role in ROLES}
    server = acl_redis(workdir, passwords)
    given = {"redis-passwords": passwords, "dispatcher-auth": {"tokens": TOKEN + "\n"}}
    config, pods, needed = plan(manifests, server.url, given)
    path = workdir / "played.yaml"
    remove_everything(path)  # what a crashed run left
    operator = redis.Redis(
        port=server.port, username="operator", password=passwords["operator"],
        decode_responses=True,
    )  # fmt: skip
    try:
        play(path, [config, *(pod.deployment for pod in pods)], needed)
        for pod in pods:
            answers_200(pod.probe_url("readinessProbe"), timeout_s=60)
        consumers = (pods[1], pods[2])
        yield Stack(pods[0], consumers, config["data"], operator, passwords["operator"])
    finally:
        operator.close()
        remove_everything(path)
        server.kill()


def http_status(url: str) -> int:
    """The status a probe's GET sees (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def answers_200(url: str, timeout_s: float) -> None:
    eventually(lambda: http_status(url) == 200, timeout_s=timeout_s)


def has_result(stack: Stack, entry_id: str, timeout_s: float) -> None:
    eventually(lambda: stack.call(f"/results/{entry_id}")[0] == 200, timeout_s)


def inspect(container: str) -> Any:
    done = podman("inspect", container)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]


def in_container(container: str, *command: str) -> subprocess.CompletedProcess[str]:
    return podman("exec", container, *command)


def logs(pod: Pod) -> str:
    done = podman("logs", pod.container)
    return done.stdout + done.stderr


@pytest.mark.parametrize("index", range(len(PODS)), ids=[n for n, _ in PODS])
def test_images_run_as_the_manifests_say(stack: Stack, index: int) -> None:
    pod = (stack.dispatcher, *stack.consumers)[index]
    state = inspect(pod.container)
    context = pod.deployment["spec"]["template"]["spec"]["securityContext"]
    user = f"{context['runAsUser']}:{context['runAsGroup']}"
    assert user == state["Config"]["User"] == "10001:10001"  # the Dockerfile's USER
    status = in_container(pod.container, "cat", "/proc/1/status").stdout
    assert "Uid:\t10001\t10001\t10001\t10001" in status
    assert "CapEff:\t0000000000000000" in status  # capabilities: drop ALL
    assert "NoNewPrivs:\t1" in status  # allowPrivilegeEscalation: false
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    denied = in_container(pod.container, "touch", "/written")
    assert "Read-only file system" in denied.stderr
    assert in_container(pod.container, "touch", "/tmp/written").returncode == 0
    assert pod.spec["resources"]["limits"]["memory"] == "256Mi"
    assert state["HostConfig"]["Memory"] == 256 * 2**20
    env = dict(variable.split("=", 1) for variable in state["Config"]["Env"])
    for variable in pod.spec["env"]:
        source = variable.get("valueFrom", {})
        if "configMapKeyRef" in source:
            assert (
                env[variable["name"]] == stack.config[source["configMapKeyRef"]["key"]]
            )
        elif "fieldRef" in source:  # metadata.name
            assert env[variable["name"]] == pod.name
        else:
            assert env[variable["name"]] == variable["value"]
    password = in_container(pod.container, "cat", env["REDIS_PASSWORD_FILE"]).stdout
    assert password.startswith(f"pw-{env['REDIS_USERNAME']}-")  # its own, no other


def test_images_probes_answer_as_kubernetes_calls_them(stack: Stack) -> None:
    for pod in (stack.dispatcher, *stack.consumers):
        for probe in ("readinessProbe", "livenessProbe"):
            assert http_status(pod.probe_url(probe)) == 200, (pod.name, probe)
    assert stack.dispatcher.probe_url("readinessProbe").endswith("/readyz")
    assert stack.dispatcher.probe_url("livenessProbe").endswith("/healthz")


def test_images_process_the_seeds_curl(stack: Stack) -> None:
    status, body = stack.call("/dispatch", {"num_messages": 10, "delay": 0.1})
    assert status == 202, body
    assert body["count"] == 10

    def processed() -> list[str]:
        text = "".join(logs(pod) for pod in stack.consumers)
        return [line for line in text.splitlines() if "demo message processed" in line]

    # The consumers' own log lines, as `podman logs` shows them.
    eventually(lambda: len(processed()) >= 10, timeout_s=60)
    seqs = sorted(json.loads(line)["payload"]["seq"] for line in processed())
    assert seqs == list(range(10))
    for entry_id in body["entry_ids"]:
        has_result(stack, entry_id, timeout_s=30)


def test_images_pipeline_status_runs_in_a_consumer(stack: Stack) -> None:
    consumer = stack.consumers[0]
    # As docs/deployment.md says (kubectl exec -i ... -- env ...): the operator user,
    # its password on stdin (never in argv).
    done = podman(
        "exec", "-i", consumer.container, "env", "REDIS_USERNAME=operator",
        "REDIS_PASSWORD_FILE=/dev/stdin", "pipeline", "status", "--json",
        stdin=stack.operator_password,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(done.stdout)
    assert (status["stream"], status["group"]) == (
        stack.config["STREAM"],
        stack.config["GROUP"],
    )
    assert {c["name"] for c in status["consumers"]} == {p.name for p in stack.consumers}
    assert status["pending"] == status["dead_letters"] == 0


def test_images_sigterm_stops_a_consumer_mid_task_with_exit_0(stack: Stack) -> None:
    payloads = [{"seconds": 1.0}] * 6
    status, body = stack.call("/dispatch", {"task": "sleep", "payloads": payloads})
    assert status == 202, body
    group, stream = stack.config["GROUP"], stack.config["STREAM"]

    def holder() -> str | None:
        """A consumer holding an entry (the manifests leave BATCH_SIZE unset, so
        tasks of a second are read one or two at a time)."""
        summary = stack.operator.xpending(stream, group)
        held = [c["name"] for c in summary["consumers"] if c["pending"] >= 1]
        return held[0] if held else None

    # Pending list: an entry or two held by one consumer, its task running.
    name = eventually(holder, timeout_s=30)
    [leaving] = [pod for pod in stack.consumers if pod.name == name]
    grace_s = leaving.deployment["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    # SIGTERM while its task runs; the grace period is the pod's.
    done = podman("stop", "-t", str(grace_s), leaving.container)
    assert done.returncode == 0, done.stderr
    assert inspect(leaving.container)["State"]["ExitCode"] == 0  # not killed
    assert '"consumer stopped"' in logs(leaving)
    # Pending list: what the leaving consumer still owns is released (its delivery
    # undone), or already claimed by the other one.
    entries = stack.operator.xpending_range(stream, group, "-", "+", 10)
    assert all(
        e["consumer"] != leaving.name or e["times_delivered"] == 0 for e in entries
    )
    # Pending list: empty; the other consumer ran the rest (released or never read).
    for entry_id in body["entry_ids"]:
        has_result(stack, entry_id, timeout_s=60)
    assert stack.operator.xpending(stream, group)["pending"] == 0
