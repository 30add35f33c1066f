"""The Kubernetes manifests and Dockerfiles, validated offline: schemas, the custom
resources' fields, cross-checks against the code, the restricted profile, linters."""

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import fakeredis
import kubernetes_validate
import pytest
import yaml

from consumer import settings as consumer_settings
from dispatcher import settings as dispatcher_settings
from dispatcher.app import create_app
from dispatcher.settings import Settings as DispatcherSettings
from dispatcher.settings import graceful_timeout_s
from harness.processes import ROOT
from pipeline_core.memory import Memory
from tests.conftest import require_tool
from tests.k8s_manifests import (
    K8S,
    Doc,
    checkov_summary,
    container,
    dashboard_json,
    find,
    load,
    workloads,
)

DOCS = load()
BUILT_IN = {"Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet",
            "PodDisruptionBudget", "NetworkPolicy",
            "HorizontalPodAutoscaler"}  # fmt: skip
SERVICES: dict[str, Callable[[Mapping[str, str]], object]] = {
    "dispatcher": dispatcher_settings.from_env,
    "consumer": consumer_settings.from_env,
}


class ReadRecorder(dict[str, str]):
    """An environment that notes every variable looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def env_names_read(service: str) -> set[str]:
    """The environment variables a service's from_env looks up (run, not parsed)."""
    env = ReadRecorder({"DISPATCH_ALLOW_ANONYMOUS": "1", "HOST": "127.0.0.1"})
    SERVICES[service](env)
    return env.read


def config_values() -> dict[str, str]:
    data: dict[str, str] = find(DOCS, "ConfigMap", "pipeline-config")["data"]
    return data


@pytest.mark.parametrize(
    "doc",
    [d for d in DOCS + load(K8S / "hpa") if d["kind"] in BUILT_IN],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_built_in_kinds_pass_the_kubernetes_schema_strictly(doc: Doc) -> None:
    kubernetes_validate.validate(doc, "1.31", strict=True)


def test_kustomization_renders_every_file_in_k8s() -> None:
    # k8s/tls/ and k8s/sentinel/ are components: tests/test_k8s_tls.py and
    # tests/test_k8s_sentinel.py render them onto k8s/.
    components = ("tls", "sentinel")
    listed = {p.name for p in K8S.rglob("*.yaml") if p.parent.name not in components}
    listed -= {"kustomization.yaml"}
    listed -= {".checkov.yaml", "hpa.yaml"}
    rendered_files = yaml.safe_load((K8S / "kustomization.yaml").read_text())[
        "resources"
    ]
    rendered_files += yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())[
        "resources"
    ]
    assert listed == set(rendered_files) - {"base"}


def test_kubectl_kustomize_renders_what_the_tests_check() -> None:
    kubectl = require_tool("kubectl", "kubernetes-client")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True
    )
    assert rendered.returncode == 0, rendered.stderr
    # kustomize suffixes generated ConfigMaps with a hash of their content
    names = {
        (d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"]))
        if d["kind"] == "ConfigMap" else (d["kind"], d["metadata"]["name"])
        for d in yaml.safe_load_all(rendered.stdout)
    }  # fmt: skip
    assert names == {(d["kind"], d["metadata"]["name"]) for d in DOCS}


def test_scaled_object_scales_the_consumers_on_the_lag_summed_over_partitions() -> None:
    scaled = find(DOCS, "ScaledObject", "consumer")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "consumer"
    find(DOCS, "Deployment", scaled["scaleTargetRef"]["name"])
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "prometheus" and "authenticationRef" not in trigger
    meta = trigger["metadata"]
    assert meta["serverAddress"].startswith("http://")
    # One total over the partitions (one trigger per partition would take the max),
    # each partition counted once however many dispatcher pods export it, and only
    # this namespace's pipeline.
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    assert meta["query"] == (
        f'sum(max by (partition) (pipeline_group_lag{{namespace="{namespace}"}}))'
    )
    assert float(meta["threshold"]) > 0 and meta["ignoreNullValues"] == "false"
    assert not [d for d in DOCS if d["kind"] == "TriggerAuthentication"]


def test_the_hpa_variant_scales_on_the_same_sum() -> None:
    text = (K8S / "hpa" / "hpa.yaml").read_text()
    assert "sum(max by (partition) (<<.Series>>{<<.LabelMatchers>>}))" in text
    hpa = find(load(K8S / "hpa"), "HorizontalPodAutoscaler", "consumer")
    [metric] = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "pipeline_group_lag"


def test_monitors_select_the_ports_that_serve_metrics() -> None:
    service_monitor = find(DOCS, "ServiceMonitor", "dispatcher")["spec"]
    service = find(DOCS, "Service", "dispatcher")
    assert (
        service_monitor["selector"]["matchLabels"].items()
        <= service["metadata"]["labels"].items()
    )
    [endpoint] = service_monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    pod_monitor = find(DOCS, "PodMonitor", "consumer")["spec"]
    pod_labels = find(DOCS, "Deployment", "consumer")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert pod_monitor["selector"]["matchLabels"].items() <= pod_labels.items()
    [pod_endpoint] = pod_monitor["podMetricsEndpoints"]
    ports = {p["name"] for p in container(DOCS, "Deployment", "consumer")["ports"]}
    assert pod_endpoint["port"] in ports


def test_prometheus_rule_and_dashboard_config_map_match_their_sources() -> None:
    rule = find(DOCS, "PrometheusRule", "stream-pipeline")["spec"]
    assert rule == yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())
    board = find(DOCS, "ConfigMap", "pipeline-dashboard")
    assert board["metadata"]["labels"] == {"grafana_dashboard": "1"}
    assert json.loads(board["data"]["pipeline.json"]) == dashboard_json()


@pytest.mark.parametrize("name", ["dispatcher", "consumer"])
def test_every_env_var_set_is_read_by_the_code_and_the_config_keys_exist(
    name: str,
) -> None:
    read = env_names_read(name)
    for variable in container(DOCS, "Deployment", name)["env"]:
        assert variable["name"] in read, (
            f"{name} sets {variable['name']}, which it never reads"
        )
        ref = variable.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            assert ref["key"] in config_values(), ref


def test_every_shared_setting_is_used_and_what_the_code_needs_is_set() -> None:
    used = {
        v["valueFrom"]["configMapKeyRef"]["key"]
        for name in SERVICES
        for v in container(DOCS, "Deployment", name)["env"]
        if "configMapKeyRef" in v.get("valueFrom", {})
    }
    assert used == set(config_values())
    consumer_env = {
        v["name"]: v for v in container(DOCS, "Deployment", "consumer")["env"]
    }
    assert (
        consumer_env["CONSUMER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.name"
    )
    for name in SERVICES:
        env = {v["name"] for v in container(DOCS, "Deployment", name)["env"]}
        assert {"REDIS_URL", "REDIS_PASSWORD_FILE", "STREAM", "GROUP"} <= env


def test_the_shared_config_sets_partitions_and_allows_changing_it() -> None:
    """PARTITIONS is one shared setting: 1 as shipped, and the ConfigMap's other
    values (no DEAD_LETTER_STREAM, a STREAM without a hash tag) let it be raised."""
    assert config_values()["PARTITIONS"] == "1"
    env = {"DISPATCH_TOKENS": "t" * 16, **config_values(), "PARTITIONS": "6"}
    assert dispatcher_settings.from_env(env).queue.partitions == 6
    assert consumer_settings.from_env(env).queue.partitions == 6


def test_dispatcher_ports_and_probe_paths_match_the_app() -> None:
    spec = container(DOCS, "Deployment", "dispatcher")
    app = create_app(DispatcherSettings(), fakeredis.FakeRedis(decode_responses=True))
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz", "/metrics", "/dispatch"} <= routes
    env = {v["name"]: v.get("value") for v in spec["env"]}
    [port] = spec["ports"]
    assert int(env["PORT"]) == port["containerPort"] == 8000
    service = find(DOCS, "Service", "dispatcher")["spec"]["ports"][0]
    assert (service["port"], service["targetPort"]) == (8000, port["name"])


def test_consumer_grace_period_outlasts_the_task_in_hand_and_the_read() -> None:
    pod = find(DOCS, "Deployment", "consumer")["spec"]["template"]["spec"]
    bound_s = (
        int(config_values()["TASK_TIMEOUT_S"]) + int(config_values()["BLOCK_MS"]) / 1000
    )
    assert pod["terminationGracePeriodSeconds"] > bound_s
    probe = container(DOCS, "Deployment", "consumer")["livenessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/healthz", "metrics")


def test_dispatcher_grace_period_outlasts_gunicorns_graceful_timeout() -> None:
    pod = find(DOCS, "Deployment", "dispatcher")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > graceful_timeout_s(
        DispatcherSettings()
    )


@pytest.mark.parametrize(
    "workload", workloads(DOCS), ids=lambda d: d["metadata"]["name"]
)
def test_every_pod_meets_the_restricted_profile(workload: Doc) -> None:
    pod = workload["spec"]["template"]["spec"]
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= {
            "configMap",
            "secret",
            "emptyDir",
            "persistentVolumeClaim",
        }
    for spec in pod["containers"] + pod.get("initContainers", []):
        context = spec["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert not context.get("privileged")
        assert (
            spec["resources"]["requests"]["cpu"]
            and spec["resources"]["limits"]["memory"]
        )
    for spec in pod["containers"]:
        assert spec["readinessProbe"] and spec["livenessProbe"]


def test_namespace_enforces_the_restricted_profile() -> None:
    labels = find(DOCS, "Namespace", "stream-pipeline")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_redis_persists_every_write_never_evicts_and_needs_a_password() -> None:
    conf = find(DOCS, "ConfigMap", "redis-config")["data"]["redis.conf"].splitlines()
    assert {
        "appendonly yes",
        "appendfsync always",
        "maxmemory-policy noeviction",
    } <= set(conf)
    assert "aclfile /run/redis/users.acl" in conf
    assert "dir /data" in conf
    redis = find(DOCS, "StatefulSet", "redis")["spec"]
    mounts = {
        m["name"]: m["mountPath"]
        for m in redis["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts["data"] == "/data"
    assert redis["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    service = find(DOCS, "Service", "redis-svc")["spec"]
    assert (service["type"], service["ports"][0]["port"]) == ("ClusterIP", 6379)
    assert config_values()["REDIS_URL"] == "redis://redis-svc:6379/0"


def test_only_the_services_reach_redis() -> None:
    policy = find(DOCS, "NetworkPolicy", "redis-ingress")["spec"]
    [rule] = policy["ingress"]
    [pods] = rule["from"]  # KEDA reads the lag from Prometheus, never from Redis
    assert pods["podSelector"]["matchExpressions"][0]["values"] == [
        "dispatcher",
        "consumer",
    ]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    dispatcher = find(DOCS, "NetworkPolicy", "dispatcher-ingress")["spec"]["ingress"]
    assert dispatcher == [{"ports": [{"port": 8000, "protocol": "TCP"}]}]


def test_no_secret_is_committed_and_no_config_map_holds_one() -> None:
    assert not [d for d in DOCS if d["kind"] == "Secret"]
    for doc in DOCS:
        if (
            doc["kind"] == "ConfigMap"
            and doc["metadata"]["name"] != "pipeline-dashboard"
        ):
            text = json.dumps(doc["data"]).lower()
            assert not re.search(r"(password|token|secret)[\"]?\s*[:=]", text), doc[
                "metadata"
            ]["name"]
            assert "requirepass" not in text.replace("requirepass ...", "")


def test_checkov_finds_nothing_beyond_the_justified_skips(tmp_path: Path) -> None:
    summary, output = checkov_summary(DOCS, tmp_path)
    assert summary["failed"] == 0, output
    assert summary["passed"] > 100


@pytest.mark.parametrize("service", ["dispatcher", "consumer"])
def test_dockerfile_passes_hadolint_and_builds_a_lean_non_root_image(
    service: str,
) -> None:
    dockerfile = ROOT / service / "Dockerfile"
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    done = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    # multi-stage on one base: a build argument, by default the pinned official image
    assert stages == ["${BASE_IMAGE}", "${BASE_IMAGE}"], stages
    [default] = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", default)
    final = text.split("\nFROM ", 2)[-1]
    assert "USER 10001:10001" in final and "PYTHONUNBUFFERED=1" in final
    assert f'ENTRYPOINT ["python", "-m", "{service}"]' in final
    assert "pip install" not in final and "apt-get" not in final


def test_dockerignore_keeps_the_context_to_what_the_images_copy() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("**")] == "**"
    packages = {"dispatcher", "consumer", "cli", "pipeline_core"}
    assert {"!requirements.lock", *(f"!{p}/" for p in packages)} <= set(lines)


@pytest.mark.parametrize(
    ("service", "packages"),
    [("dispatcher", ["dispatcher", "pipeline_core"]),
     ("consumer", ["consumer", "cli", "pipeline_core"])],
)  # fmt: skip
def test_each_image_copies_every_package_its_service_imports(
    service: str, packages: list[str]
) -> None:
    text = (ROOT / service / "Dockerfile").read_text()
    for package in packages:
        assert f"COPY {package} /app/{package}" in text


def test_consumer_image_carries_the_pipeline_command() -> None:
    text = (ROOT / "consumer" / "Dockerfile").read_text()
    assert "COPY cli /app/cli" in text
    assert 'exec python -m cli "$@"' in text and "/opt/venv/bin/pipeline" in text


def test_redis_memory_settings_and_the_queue_budget_agree() -> None:
    """Redis's maxmemory fits its container with room for fork and buffers; the
    dispatcher's budget (a share of maxmemory) leaves room under it for the acks,
    results and dead letters of work already accepted."""
    config = find(DOCS, "ConfigMap", "redis-config")["data"]["redis.conf"]
    found = re.search(r"maxmemory (\d+)mb", config)
    assert found and "maxmemory-policy noeviction" in config
    maxmemory = int(found.group(1)) * 2**20
    limit = container(DOCS, "StatefulSet", "redis")["resources"]["limits"]["memory"]
    assert mebibytes(limit) * 2**20 >= 1.25 * maxmemory  # AOF rewrite and buffers
    settings = dispatcher_settings.from_env(
        {"DISPATCH_TOKENS": "t" * 16, **config_values()}
    )
    budget = Memory(0, maxmemory).budget_bytes(
        settings.memory_budget_bytes, settings.memory_budget_ratio
    )
    assert 0 < budget <= 0.85 * maxmemory
    assert maxmemory - budget >= 64 * 2**20  # headroom for what accepted work writes


def mebibytes(quantity: str) -> int:
    """A Kubernetes memory quantity in MiB (the Mi and Gi forms the manifests use)."""
    units = {"Mi": 1, "Gi": 1024}
    return int(quantity[:-2]) * units[quantity[-2:]]


def test_the_documented_redis_cli_command_finds_the_operator_password_alone() -> None:
    """docs/deployment.md runs redis-cli in redis-0 with the password at
    /etc/redis-passwords/operator: mounted there, and no other role's beside it."""
    documented = (ROOT / "docs" / "deployment.md").read_text()
    command = re.search(r"exec -it redis-0 -- sh -c \\\n\s+'([^']+)'", documented)
    assert command and "$(cat /etc/redis-passwords/operator)" in command.group(1)
    spec = find(DOCS, "StatefulSet", "redis")["spec"]["template"]["spec"]
    [redis] = spec["containers"]
    mounts = {m["mountPath"]: m["name"] for m in redis["volumeMounts"]}
    volume = next(
        v for v in spec["volumes"] if v["name"] == mounts["/etc/redis-passwords"]
    )
    assert volume["secret"]["secretName"] == "redis-passwords"
    assert volume["secret"]["items"] == [{"key": "operator", "path": "operator"}]
