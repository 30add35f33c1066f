"""The Deployments of k8s/base as `kubectl kustomize` renders them, run by Debian's
`podman kube play` (4.3) on the host network against a Redis on loopback. What is
changed in the rendered YAML, and why, is the list in docs/images.md; every change is
made here."""

import copy
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.processes import ROOT, free_port
from scripts.images import engine_env
from tests.k8s_manifests import Doc, find

PREFIX = "e2e-"  # every pod, secret and volume the test makes carries it
# (played Deployment, rendered Deployment): two consumers, one Deployment each.
PODS = (("e2e-dispatcher", "dispatcher"), ("e2e-consumer-a", "consumer"),
        ("e2e-consumer-b", "consumer"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Pod:
    deployment: Doc  # as played

    @property
    def name(self) -> str:
        """podman's name for the pod (<deployment>-pod-<n>): a CONSUMER_NAME."""
        return f"{self.deployment['metadata']['name']}-pod-0"

    @property
    def container(self) -> str:
        return f"{self.name}-{self.spec['name']}"

    @property
    def spec(self) -> Doc:
        [only] = self.deployment["spec"]["template"]["spec"]["containers"]
        spec: Doc = only
        return spec

    def url(self, path: str) -> str:
        """A URL on the pod's port (its probes'), at its address: loopback."""
        port = self.spec["livenessProbe"]["httpGet"]["port"]
        return f"http://127.0.0.1:{port}{path}"

    def probe_url(self, probe: str) -> str:
        """What kubelet's httpGet for this probe calls."""
        get = self.spec[probe]["httpGet"]
        return f"http://127.0.0.1:{get['port']}{get['path']}"


def podman(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], input=stdin, env=engine_env(), capture_output=True, text=True
    )


def render(kubectl: str) -> list[Doc]:
    """What `kubectl kustomize k8s/base` renders."""
    command = [kubectl, "kustomize", str(ROOT / "k8s" / "base")]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def for_podman(
    deployment: Doc, name: str, port: int, secrets: Mapping[str, Mapping[str, str]]
) -> tuple[Doc, dict[str, dict[str, str]]]:
    """One Deployment as podman 4.3 can play it here: one replica on the host network,
    on a free port, with volumes of its own. Also the Secrets it needs, from `secrets`
    (Secret name -> key -> value, what an operator would create)."""
    played = copy.deepcopy(deployment)
    played["metadata"]["name"] = name
    played["spec"]["replicas"] = 1  # on the host network, one port per process
    pod = played["spec"]["template"]["spec"]
    pod["hostNetwork"] = True  # Redis is on the host's loopback
    [container] = pod["containers"]
    _listen_on(container, port)
    made = {}
    for volume in pod["volumes"]:
        own = f"{name}-{volume['name']}"
        if "secret" in volume:
            made[own] = _secret_files(volume["secret"], secrets)
            volume["secret"] |= {"secretName": own, "optional": False}
        else:
            _rename(volume, container, own)
    return played, made


def _listen_on(container: Doc, port: int) -> None:
    """The process serves on port, and its probes call that number: podman refuses
    port mappings (`ports`) on the host network, so named ports cannot be resolved."""
    names = {p["name"] for p in container.pop("ports")}
    env = _env(container)
    if "PORT" in env:  # the dispatcher binds every interface unless told: loopback
        env["PORT"]["value"] = str(port)
        container["env"].append({"name": "HOST", "value": "127.0.0.1"})
    else:
        env["METRICS_PORT"]["value"] = str(port)
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in names
        container[probe]["httpGet"]["port"] = port


def _env(container: Doc) -> dict[str, Doc]:
    return {variable["name"]: variable for variable in container["env"]}


def _secret_files(
    source: Doc, secrets: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """The files a secret volume mounts. podman 4.3 mounts every key of the Secret it
    names, under the key's name, and ignores `items`: the items are applied here, and
    the pod gets a Secret of its own holding only them."""
    data = secrets[source["secretName"]]
    items = source.get("items") or [{"key": key, "path": key} for key in data]
    return {item["path"]: data[item["key"]] for item in items}


def _rename(volume: Doc, container: Doc, own: str) -> None:
    """podman 4.3 makes an emptyDir a named volume under the volume's name, shared by
    every pod that names it the same: give it a name of its own."""
    for mount in container["volumeMounts"]:
        if mount["name"] == volume["name"]:
            mount["name"] = own
    volume["name"] = own


def plan(
    manifests: list[Doc], redis_url: str, secrets: Mapping[str, Mapping[str, str]]
) -> tuple[Doc, list[Pod], dict[str, dict[str, str]]]:
    """The ConfigMap (REDIS_URL: the Redis on loopback, not redis-svc), the dispatcher
    and two consumers as Deployments of their own, and the Secrets they mount."""
    config = copy.deepcopy(find(manifests, "ConfigMap", "pipeline-config"))
    config["data"]["REDIS_URL"] = redis_url
    pods, needed = [], dict[str, dict[str, str]]()
    for name, source in PODS:
        deployment = find(manifests, "Deployment", source)
        played, secret_files = for_podman(deployment, name, free_port(), secrets)
        pods.append(Pod(played))
        needed |= secret_files
    return config, pods, needed


def create_secret(name: str, files: Mapping[str, str]) -> None:
    """podman 4.3 writes a Secret's `data` values into the files as they stand (it does
    not base64-decode them, and ignores stringData), so they are stored undecoded."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
    secret["data"] = dict(files)
    done = podman("secret", "create", name, "-", stdin=yaml.safe_dump(secret))
    assert done.returncode == 0, done.stderr


def play(path: Path, docs: list[Doc], secrets: Mapping[str, Mapping[str, str]]) -> None:
    """`podman kube play` of the docs (written to path), their Secrets created first."""
    for name, files in secrets.items():
        create_secret(name, files)
    path.write_text(yaml.safe_dump_all(docs))
    done = podman("kube", "play", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def remove_everything(path: Path) -> None:
    """The pods, containers, secrets and volumes of this run (or of a crashed one)."""
    if path.exists():
        podman("kube", "down", str(path))
    pods = podman("pod", "ps", "-q", "--filter", f"name=^{PREFIX}").stdout.split()
    if pods:
        podman("pod", "rm", "-f", *pods)
    secrets = podman("secret", "ls", "--format", "{{.Name}}").stdout.split()
    ours = [name for name in secrets if name.startswith(PREFIX)]
    if ours:
        podman("secret", "rm", *ours)
    volumes = podman("volume", "ls", "-q", "--filter", f"name=^{PREFIX}").stdout.split()
    if volumes:
        podman("volume", "rm", "-f", *volumes)
