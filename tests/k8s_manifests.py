"""Loads k8s/ as kustomize would (resources, configMapGenerator, namespace), so tests
can check the manifests without a cluster or kubectl."""

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from harness.processes import ROOT

K8S = ROOT / "k8s"
Doc = dict[str, Any]


def load(directory: Path = K8S) -> list[Doc]:
    """Every object `kubectl kustomize <directory>` renders (for what k8s/ uses)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[Doc] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            docs += load(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for generator in kustomization.get("configMapGenerator", []):
        files = [directory / f for f in generator.get("files", [])]
        labels = generator.get("options", {}).get("labels", {})
        data = {f.name: f.read_text() for f in files}
        metadata = {"name": generator["name"], "labels": labels}
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata,
                "data": data,
            }
        )
    for doc in docs:
        if "namespace" in kustomization and doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def container(docs: list[Doc], kind: str, name: str) -> Doc:
    [only] = find(docs, kind, name)["spec"]["template"]["spec"]["containers"]
    spec: Doc = only
    return spec


def dashboard_json() -> Any:
    return json.loads((ROOT / "grafana" / "dashboards" / "pipeline.json").read_text())


def checkov_summary(docs: list[Doc], workdir: Path) -> tuple[dict[str, Any], str]:
    """checkov's summary of `docs` (with k8s/.checkov.yaml's justified skips), and its
    output's tail to show on a failure."""
    checkov = ROOT / ".venv-tools" / "bin" / "checkov"
    if not checkov.exists():
        raise FileNotFoundError("checkov is missing: run `make setup` (.venv-tools)")
    rendered = workdir / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    done = subprocess.run(
        [str(checkov), "-f", str(rendered), "--config-file", str(K8S / ".checkov.yaml"),
         "--output", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    report: Any = json.loads(done.stdout)
    summary = report["summary"] if isinstance(report, dict) else report[0]["summary"]
    return summary, done.stdout[-3000:]
