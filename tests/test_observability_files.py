"""The dashboard, the alert rules and their Kubernetes form, checked without Grafana."""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from harness.processes import ROOT
from tests.conftest import require_tool

DASHBOARD = ROOT / "grafana" / "dashboards" / "pipeline.json"
ALERTS = ROOT / "prometheus" / "alerts.yml"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_targets() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel."""
    return [
        (p["title"], t["expr"]) for p in dashboard()["panels"] for t in p["targets"]
    ]


def test_dashboard_has_a_fixed_uid_a_current_schema_and_a_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] == "stream-pipeline"
    assert board["schemaVersion"] >= 39
    [variable] = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )


def test_dashboard_every_panel_uses_the_variable_a_unit_and_a_description() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (
            title
        )
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"]), (
            title
        )
        assert panel["fieldConfig"]["defaults"]["unit"], title
        assert len(panel["description"]) > 20, title
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), title
        assert panel["targets"] and all(
            t["refId"] and t["expr"] for t in panel["targets"]
        )


def test_dashboard_rates_use_the_rate_interval() -> None:
    for title, expr in panel_targets():
        for window in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", (title, expr)


def test_dashboard_has_the_panels_operators_need() -> None:
    titles = " | ".join(p["title"] for p in dashboard()["panels"]).lower()
    for needed in ("throughput", "latency", "backlog", "age", "pending per consumer",
                   "reclaims", "dead letters", "failures by task", "live consumers",
                   "redis"):  # fmt: skip
        assert needed in titles


def test_provisioning_points_grafana_at_the_dashboards_folder() -> None:
    provider = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "dashboards" / "pipeline.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_alert_rules_pass_promtool_checks_and_unit_tests() -> None:
    promtool = require_tool("promtool", "prometheus")
    for command in (
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        done = subprocess.run(
            [promtool, *command], cwd=ALERTS.parent, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_prometheusrule_carries_the_same_rules() -> None:
    rule = yaml.safe_load((ROOT / "k8s" / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())


def test_alerts_only_use_metrics_the_services_export() -> None:
    exported = set(re.findall(r"\"(\w+)\"", _metric_source()))
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            for name in re.findall(
                r"\b((?:pipeline|consumer|dispatcher)_\w+)", rule["expr"]
            ):
                base = re.sub(r"_(total|bucket|count|sum)$", "", name)
                assert name in exported or base in exported, (rule["alert"], name)


def _metric_source() -> str:
    files = [
        "consumer/metrics.py",
        "dispatcher/metrics.py",
        "dispatcher/stream_state.py",
    ]
    return "\n".join(Path(ROOT, f).read_text() for f in files)


def test_operations_doc_lists_every_shipped_alert() -> None:
    documented = (ROOT / "docs" / "operations.md").read_text()
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    missing = [r["alert"] for r in rules if f"| {r['alert']}" not in documented]
    assert not missing, f"docs/operations.md's alert table lacks {missing}"
