"""The TLS component (k8s/tls/): HTTPS in front of the dispatcher, rediss:// to Redis.
Validated offline as kustomize renders it onto k8s/, and its Redis configuration and
readiness probe run for real: a redis-server started with the component's redis.conf
(paths moved to the test's directory) speaks TLS only, the probe passes, and a service
user reaches it with the CA alone."""

import os
import shlex
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis
import yaml

from harness.redis_server import RedisServer
from tests.conftest import require_redis_server, require_tool
from tests.k8s_manifests import K8S, Doc, find
from tests.test_security import make_certificates, render_acl

CA = "/var/run/secrets/redis-tls/ca.crt"
BUILT_IN = {"Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet",
            "NetworkPolicy", "Ingress"}  # fmt: skip


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    """What README's overlay renders: k8s/ plus the component, from outside k8s/."""
    kubectl = require_tool("kubectl", "kubernetes-client")
    overlay = tmp_path_factory.mktemp("overlay")
    relative = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{relative}]\ncomponents: [{relative}/tls]\n"
    )
    done = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def named(docs: list[Doc], kind: str, prefix: str) -> Doc:
    [doc] = [
        d for d in docs
        if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)
    ]  # fmt: skip
    return doc


def pod_spec(docs: list[Doc], kind: str, name: str) -> Any:
    return find(docs, kind, name)["spec"]["template"]["spec"]


def test_the_component_renders_valid_kubernetes_objects(rendered: list[Doc]) -> None:
    for doc in rendered:
        if doc["kind"] in BUILT_IN:
            kubernetes_validate.validate(doc, "1.31", strict=True)
    assert {d["kind"] for d in rendered} >= {"Ingress", "ScaledObject"}


@pytest.mark.parametrize("service", ["dispatcher", "consumer"])
def test_services_reach_redis_over_tls_trusting_the_ca_alone(
    rendered: list[Doc], service: str
) -> None:
    config = named(rendered, "ConfigMap", "pipeline-config")["data"]
    assert config["REDIS_URL"].startswith("rediss://redis-svc:6379/")
    spec = pod_spec(rendered, "Deployment", service)
    [container] = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["REDIS_CA_FILE"] == CA
    mount = next(m for m in container["volumeMounts"] if CA.startswith(m["mountPath"]))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {
        "secretName": "redis-tls",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }  # never Redis's private key


def test_the_ingress_serves_the_api_and_console_over_https_only(
    rendered: list[Doc],
) -> None:
    ingress = find(rendered, "Ingress", "dispatcher")
    spec = ingress["spec"]
    [tls] = spec["tls"]
    [rule] = spec["rules"]
    assert rule["host"] in tls["hosts"] and tls["secretName"] == "dispatcher-tls"
    paths = {p["path"]: p["backend"]["service"] for p in rule["http"]["paths"]}
    assert set(paths) == {"/dispatch", "/results", "/ui"}  # no /metrics, no probes
    service = find(rendered, "Service", "dispatcher")["spec"]
    assert all(
        b == {"name": "dispatcher", "port": {"number": service["ports"][0]["port"]}}
        for b in paths.values()
    )
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
    # The proxy's body limit is the dispatcher's MAX_BODY_BYTES (16 MiB).
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "16m"


def redis_options(conf: str, files: dict[str, str], port: int) -> list[str]:
    """The component's redis.conf as redis-server arguments, its paths moved here."""
    options: list[str] = []
    for line in conf.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0] in ("bind", "dir"):
            continue  # the test's server binds loopback, in its own directory
        key, values = words[0], [files.get(w, w) for w in words[1:]]
        if key == "tls-port":
            values = [str(port)]
        options += [f"--{key}", *(values or [""])]
    return options


def test_redis_speaks_tls_only_and_its_probe_passes(
    rendered: list[Doc], tmp_path: Path
) -> None:
    require_redis_server()
    certs = make_certificates(tmp_path)
    acl, passwords = render_acl(tmp_path)
    spec = pod_spec(rendered, "StatefulSet", "redis")
    redis_container = next(c for c in spec["containers"] if c["name"] == "redis")
    tls_dir = next(
        m["mountPath"] for m in redis_container["volumeMounts"]
        if m["name"] == "redis-tls"
    )  # fmt: skip
    files = {
        f"{tls_dir}/tls.crt": str(certs["server.crt"]),
        f"{tls_dir}/tls.key": str(certs["server.key"]),
        f"{tls_dir}/ca.crt": str(certs["ca.crt"]),
        "/run/redis/users.acl": str(acl),
    }
    conf = named(rendered, "ConfigMap", "redis-config")["data"]["redis.conf"]
    assert "port 0" in conf.splitlines()  # no plain-text port at all
    server = RedisServer(tmp_path / "redis", options=())
    server.options = redis_options(conf, files, server.port)
    server.start()
    try:
        probe = redis_container["readinessProbe"]["exec"]["command"][-1]
        for path, moved in files.items():
            probe = probe.replace(path, moved)
        probe = probe.replace("redis-cli ", f"redis-cli -p {server.port} ", 1)
        assert subprocess.run(["sh", "-c", probe], timeout=30).returncode == 0
        as_dispatcher = redis.Redis(
            port=server.port, username="dispatcher", password=passwords["dispatcher"],
            ssl=True, ssl_ca_certs=str(certs["ca.crt"]), socket_timeout=5,
        )  # fmt: skip
        with as_dispatcher:
            assert as_dispatcher.ping()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"PING\r\n")  # clear text: not spoken on the port
            try:
                answer = raw.recv(64)
            except ConnectionResetError:
                answer = b""  # refused outright
            assert not answer.startswith(b"+PONG")
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):  # a client that trusts only the system's CAs refuses our server
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    finally:
        server.kill()
