"""The Sentinel component (k8s/sentinel/): Redis with replicas and three Sentinels as
StatefulSets. Validated offline as kustomize renders it onto k8s/ (schemas, the
services' settings against the Sentinels it runs, the restricted profile,
checkov); its start-up scripts run against stand-in commands, and its ACL users for
replication and Sentinel carry a real forced failover."""

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis
import yaml

from consumer import settings as consumer_settings
from dispatcher import settings as dispatcher_settings
from harness.redis_server import EPHEMERAL
from harness.sentinel import LocalSentinel
from tests import test_k8s
from tests.conftest import eventually, require_redis_server, require_tool
from tests.k8s_manifests import K8S, Doc, checkov_summary, find
from tests.test_security import render_acl

COMPONENT = K8S / "sentinel"
BUILT_IN = {"Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet",
            "PodDisruptionBudget", "NetworkPolicy"}  # fmt: skip


def render(base: Path, directory: Path) -> list[Doc]:
    """What an overlay of yours renders: `base` plus the component, from outside."""
    kubectl = require_tool("kubectl", "kubernetes-client")
    relative = os.path.relpath(base, directory)
    component = os.path.relpath(COMPONENT, directory)
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{relative}]\ncomponents: [{component}]\n"
    )
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    return render(K8S, tmp_path_factory.mktemp("overlay"))


def pod_spec(docs: list[Doc], kind: str, name: str) -> Any:
    return find(docs, kind, name)["spec"]["template"]["spec"]


def sentinel_addresses(docs: list[Doc]) -> str:
    """Every Sentinel pod by its stable name, as the services must list them."""
    sentinels = find(docs, "StatefulSet", "sentinel")
    service = sentinels["spec"]["serviceName"]
    namespace = sentinels["metadata"]["namespace"]
    [port] = find(docs, "Service", service)["spec"]["ports"]
    return ",".join(
        f"sentinel-{n}.{service}.{namespace}.svc.cluster.local:{port['port']}"
        for n in range(sentinels["spec"]["replicas"])
    )


def test_the_component_renders_valid_objects_onto_k8s_and_k8s_hpa(
    rendered: list[Doc], tmp_path: Path
) -> None:
    for doc in rendered:
        if doc["kind"] in BUILT_IN:
            kubernetes_validate.validate(doc, "1.31", strict=True)
    on_hpa = render(K8S / "hpa", tmp_path)
    assert find(on_hpa, "StatefulSet", "sentinel")
    assert find(rendered, "StatefulSet", "redis")["spec"]["replicas"] == 3
    sentinels = find(rendered, "StatefulSet", "sentinel")["spec"]
    assert sentinels["replicas"] == 3
    budget = find(rendered, "PodDisruptionBudget", "sentinel")["spec"]
    assert budget["minAvailable"] == 2  # the quorum the Sentinels are configured with
    assert "sentinel monitor pipeline $master 6379 2" in script("sentinel-conf.sh")


@pytest.mark.parametrize("name", ["redis", "sentinel"])
def test_redis_and_sentinel_pods_meet_the_restricted_profile(
    rendered: list[Doc], name: str
) -> None:
    test_k8s.test_every_pod_meets_the_restricted_profile(
        find(rendered, "StatefulSet", name)
    )


@pytest.mark.parametrize("service", ["dispatcher", "consumer"])
def test_services_find_the_master_through_the_sentinels_the_component_runs(
    rendered: list[Doc], service: str, tmp_path: Path
) -> None:
    config = find(rendered, "ConfigMap", "pipeline-config")["data"]
    assert config["REDIS_SENTINELS"] == sentinel_addresses(rendered)
    assert config["REDIS_SENTINEL_MASTER"] == "pipeline"
    spec = pod_spec(rendered, "Deployment", service)
    [container] = spec["containers"]
    env = {e["name"]: e for e in container["env"]}
    read = test_k8s.env_names_read(service)
    assert set(env) <= read, set(env) - read
    for variable in env.values():
        ref = variable.get("valueFrom", {}).get("configMapKeyRef")
        assert ref is None or ref["key"] in config
    # The Sentinels' password, from a file mounted from its own key.
    path = env["REDIS_SENTINEL_PASSWORD_FILE"]["value"]
    mount = next(
        m for m in container["volumeMounts"] if path.startswith(m["mountPath"])
    )
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["items"] == [
        {"key": "sentinel-clients", "path": "password"}
    ]
    # What the pod reads parses: the services start with these values.
    secret = tmp_path / "password"
    secret.write_text("pw\n")
    values = {k: str(v) for k, v in config.items()} | {
        "REDIS_SENTINEL_PASSWORD_FILE": str(secret), "DISPATCH_TOKENS": "t" * 16,
    }  # fmt: skip
    redis_settings = (
        dispatcher_settings.from_env(values).redis
        if service == "dispatcher"
        else consumer_settings.from_env(values).redis
    )
    assert redis_settings.sentinel_master == "pipeline"
    assert len(redis_settings.sentinels) == 3


def test_every_setting_the_component_adds_is_used(rendered: list[Doc]) -> None:
    used = {
        v["valueFrom"]["configMapKeyRef"]["key"]
        for name in ("dispatcher", "consumer")
        for v in pod_spec(rendered, "Deployment", name)["containers"][0]["env"]
        if "configMapKeyRef" in v.get("valueFrom", {})
    }
    assert used == set(find(rendered, "ConfigMap", "pipeline-config")["data"])
    env = pod_spec(rendered, "Deployment", "dispatcher")["containers"][0]["env"]
    assert {"name": "MIN_REPLICAS_ACKED", "valueFrom": {"configMapKeyRef": {
        "name": "pipeline-config", "key": "MIN_REPLICAS_ACKED"}}} in env  # fmt: skip


def test_each_redis_pod_starts_with_the_role_its_init_container_chose(
    rendered: list[Doc],
) -> None:
    spec = pod_spec(rendered, "StatefulSet", "redis")
    role = next(c for c in spec["initContainers"] if c["name"] == "role")
    written = role["command"][-1]
    [redis_container] = spec["containers"]
    assert redis_container["args"][-2:] == ["--include", written]
    run = next(m for m in role["volumeMounts"] if written.startswith(m["mountPath"]))
    assert not run.get("readOnly")
    assert next(v for v in spec["volumes"] if v["name"] == run["name"])["emptyDir"]
    headless = find(rendered, "Service", "redis-headless")["spec"]
    assert headless["publishNotReadyAddresses"] is True


def test_the_sentinels_and_the_replicas_reach_what_they_need(
    rendered: list[Doc],
) -> None:
    sentinel = find(rendered, "NetworkPolicy", "sentinel-ingress")["spec"]["ingress"]
    [rule] = sentinel
    assert rule["from"][0]["podSelector"]["matchExpressions"][0]["values"] == [
        "dispatcher", "consumer", "redis", "sentinel"
    ]  # fmt: skip
    assert rule["ports"] == [{"port": 26379, "protocol": "TCP"}]
    [replication] = find(rendered, "NetworkPolicy", "redis-replication-ingress")[
        "spec"
    ]["ingress"]
    assert replication["ports"] == [{"port": 6379, "protocol": "TCP"}]


def test_checkov_finds_nothing_in_the_component_beyond_the_justified_skips(
    rendered: list[Doc], tmp_path: Path
) -> None:
    summary, output = checkov_summary(rendered, tmp_path)
    assert summary["failed"] == 0, output


def script(name: str) -> str:
    return (COMPONENT / name).read_text()


def run_script(name: str, tmp_path: Path, hostname: str, answer: str | None) -> str:
    """Run a start-up script with stand-ins for hostname and redis-cli (`answer`: what
    a Sentinel says of the master, None: no Sentinel answers); returns what it wrote."""
    bin_dir, passwords = tmp_path / "bin", tmp_path / "passwords"
    bin_dir.mkdir()
    passwords.mkdir()
    for key in ("replication", "sentinel", "sentinel-clients"):
        (passwords / key).write_text(f"pw-{key}\n")
    (bin_dir / "hostname").write_text(f"#!/bin/sh\necho {hostname}\n")
    cli = f"printf '%s\\n6379\\n' {answer}" if answer else "exit 1"
    (bin_dir / "redis-cli").write_text(f"#!/bin/sh\n{cli}\n")
    for stand_in in bin_dir.iterdir():
        stand_in.chmod(0o755)
    out = tmp_path / "out.conf"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "NAMESPACE": "ns"}
    subprocess.run(
        ["sh", str(COMPONENT / name), str(passwords), str(out)], check=True, env=env
    )
    return out.read_text()


@pytest.mark.parametrize(
    ("hostname", "answer", "replica_of"),
    [
        ("redis-0", None, None),  # a first start: redis-0 is master
        ("redis-1", None, "redis-0.redis-headless.ns.svc.cluster.local"),
        ("redis-0", "redis-2.redis-headless.ns.svc.cluster.local",
         "redis-2.redis-headless.ns.svc.cluster.local"),  # after a failover
        ("redis-2", "redis-2.redis-headless.ns.svc.cluster.local", None),
    ],
)  # fmt: skip
def test_a_redis_pod_follows_the_master_the_sentinels_name(
    tmp_path: Path, hostname: str, answer: str | None, replica_of: str | None
) -> None:
    written = run_script("redis-role.sh", tmp_path, hostname, answer).splitlines()
    assert written[:3] == [
        f"replica-announce-ip {hostname}.redis-headless.ns.svc.cluster.local",
        "masteruser replication",
        "masterauth pw-replication",
    ]
    assert written[3:] == ([f"replicaof {replica_of} 6379"] if replica_of else [])


@pytest.mark.parametrize(
    ("answer", "watched"),
    [(None, "redis-0.redis-headless.ns.svc.cluster.local"),
     ("redis-1.redis-headless.ns.svc.cluster.local",
      "redis-1.redis-headless.ns.svc.cluster.local")],
)  # fmt: skip
def test_a_sentinel_watches_the_master_its_peers_name(
    tmp_path: Path, answer: str | None, watched: str
) -> None:
    written = run_script("sentinel-conf.sh", tmp_path, "sentinel-1", answer)
    lines = set(written.splitlines())
    assert f"sentinel monitor pipeline {watched} 6379 2" in lines
    assert {"sentinel auth-user pipeline sentinel", "sentinel auth-pass pipeline "
            "pw-sentinel", "requirepass pw-sentinel-clients",
            "sentinel sentinel-pass pw-sentinel-clients",
            "sentinel announce-ip sentinel-1.sentinel-headless.ns.svc.cluster.local",
            "sentinel resolve-hostnames yes"} <= lines  # fmt: skip
    # Hostnames must resolve before the monitor line names one.
    assert written.index("resolve-hostnames") < written.index("sentinel monitor")


def test_the_replication_and_sentinel_users_carry_a_real_failover(
    tmp_path: Path,
) -> None:
    """Replicas sync as `replication`, Sentinels watch and promote as `sentinel`
    (users.acl's rules, rendered with passwords); nothing they send is refused."""
    require_redis_server()
    rendered_acl, passwords = render_acl(tmp_path)
    text = rendered_acl.read_text().replace(
        "user default off", "user default on nopass ~* &* +@all"
    )  # the test's own
    rendered_acl.write_text(text)
    options = (*EPHEMERAL, "--aclfile", str(rendered_acl), "--masteruser",
               "replication", "--masterauth", passwords["replication"])  # fmt: skip
    topology = LocalSentinel(
        tmp_path / "sentinel", options=options,
        auth=("sentinel", passwords["sentinel"]),
    )  # fmt: skip
    try:
        topology.start()
        old = topology.master()
        with redis.Redis(port=topology.sentinel_ports[0]) as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", "pipeline")
        new = topology.wait_for_failover(old)
        # The other replica now syncs from the new master, as `replication`.
        with new.client() as client:
            eventually(lambda: online_replicas(client) >= 1, timeout_s=15)
        for node in topology.nodes:
            with node.client() as client:
                denied = client.acl_log()
            assert not denied, denied
    finally:
        topology.stop()


def online_replicas(client: redis.Redis) -> int:
    replication = client.info("replication")
    return sum(
        1
        for key, value in replication.items()
        if re.fullmatch(r"slave\d+", key) and value.get("state") == "online"
    )
