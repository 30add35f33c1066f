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


# The dispatcher's queue gauges, per partition (PARTITIONS=2 here), and the queue's
# figure a panel must show: the sum over partitions, or the largest for ages and
# consumers (every consumer is in every partition's group).
QUEUE_GAUGES = {
    "pipeline_group_lag": ((5, 7), 12),
    "pipeline_group_pending": ((1, 2), 3),
    "pipeline_dead_letter_length": ((0, 4), 4),
    "pipeline_oldest_undelivered_age_seconds": ((30, 90), 90),
    "pipeline_oldest_pending_age_seconds": ((10, 20), 20),
    "pipeline_group_consumers_active": ((2, 3), 3),
    "pipeline_group_consumers": ((3, 3), 3),
}
BY_PARTITION = "Lag by partition"


def _series(partitioned: bool) -> list[dict[str, str]]:
    """Each gauge as two dispatcher pods export it (the same figures, read from the
    same Redis): with a `partition` label, or none (PARTITIONS=1, partition 0's)."""
    gauges = [(name, "", values) for name, (values, _) in QUEUE_GAUGES.items()]
    gauges += [("pipeline_consumer_pending", ',consumer="c1"', (1, 1)),
               ("pipeline_consumer_pending", ',consumer="c2"', (0, 1))]  # fmt: skip
    return [
        {"series": f'{name}{{instance="{pod}"{labels}{_label(index, partitioned)}}}',
         "values": f"{value}x2"}
        for pod in ("a", "b")
        for name, labels, values in gauges
        for index, value in enumerate(values if partitioned else values[:1])
    ]  # fmt: skip


def _label(index: int, partitioned: bool) -> str:
    return f',partition="{index}"' if partitioned else ""


def _expected(title: str, expr: str, partitioned: bool) -> list[dict[str, object]]:
    """The samples a queue panel's query must give for _series(partitioned)."""
    if title == BY_PARTITION:
        lags = QUEUE_GAUGES["pipeline_group_lag"][0]
        if not partitioned:
            return [{"labels": "{}", "value": lags[0]}]
        return [
            {"labels": f'{{partition="{i}"}}', "value": v} for i, v in enumerate(lags)
        ]
    if "pipeline_consumer_pending" in expr:
        totals = {"c1": 2, "c2": 1} if partitioned else {"c1": 1, "c2": 0}
        return [
            {"labels": f'{{consumer="{c}"}}', "value": v} for c, v in totals.items()
        ]
    [name] = [n for n in QUEUE_GAUGES if re.search(rf"\b{n}\b", expr)]
    values, total = QUEUE_GAUGES[name]
    return [{"labels": "{}", "value": total if partitioned else values[0]}]


def test_dashboard_queue_panels_show_the_queues_figures_with_partitions_or_not(
    tmp_path: Path,
) -> None:
    """Every query on a queue gauge, evaluated by promtool over series of two
    dispatcher pods, with PARTITIONS=2 and with PARTITIONS=1 (no label)."""
    promtool = require_tool("promtool", "prometheus")
    gauges = "|".join([*QUEUE_GAUGES, "pipeline_consumer_pending"])
    queries = [(t, e) for t, e in panel_targets() if re.search(rf"\b({gauges})\b", e)]
    assert len(queries) == 9, queries  # a new queue panel needs its expected figure
    tests = [
        {"interval": "1m", "input_series": _series(partitioned),
         "promql_expr_test": [
             {"expr": expr, "eval_time": "1m",
              "exp_samples": _expected(title, expr, partitioned)}
             for title, expr in queries
         ]}
        for partitioned in (True, False)
    ]  # fmt: skip
    path = tmp_path / "dashboard_test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], "tests": tests}))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_shows_the_lag_of_each_partition() -> None:
    [panel] = [p for p in dashboard()["panels"] if p["title"] == BY_PARTITION]
    [target] = panel["targets"]
    assert target["expr"] == "max by (partition) (pipeline_group_lag)"
    assert "{{partition}}" in target["legendFormat"]
    assert panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "none"


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
