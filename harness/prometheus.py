"""A real Prometheus scraping the stack (`make run`, and the observability tests), with
the shipped alert rules loaded."""

import json
import os
import subprocess
from pathlib import Path

from harness.processes import ROOT, free_port, http_ok, port_is_free, spawn, wait_for

ALERT_RULES = ROOT / "prometheus" / "alerts.yml"


def start_prometheus(
    workdir: Path,
    targets: dict[str, list[str]],
    interval: str = "5s",
    port: int | None = None,
    rules: Path = ALERT_RULES,
) -> "tuple[subprocess.Popen[bytes], str]":
    """Scrapes each job's targets every `interval` and evaluates the rules as often;
    returns once Prometheus answers /-/ready."""
    jobs = [
        {"job_name": job, "static_configs": [{"targets": hosts}]}
        for job, hosts in targets.items()
    ]
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)],
        "scrape_configs": jobs,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(json.dumps(config, indent=2))  # JSON: YAML
    port = port or next(filter(port_is_free, range(9090, 9190)), None) or free_port()
    with (workdir / "prometheus.log").open("ab") as log:
        process = spawn(
            ["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'prometheus'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            dict(os.environ), log,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_ok(f"{url}/-/ready"), timeout_s=30, every_s=0.1)
    return process, url
