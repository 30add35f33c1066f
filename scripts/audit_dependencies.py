"""`make lint`'s supply-chain check: pip-audit over the locked runtime and development
dependencies. A known vulnerability fails the build. Dependencies the vulnerability
service could not check (it cannot be reached, or does not answer for them) are listed
loudly as NOT AUDITED: never a silent pass."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ("requirements.lock", "requirements-dev.lock")


def audit(lock: str) -> tuple[list[str], list[str]]:
    """(vulnerabilities found, dependencies not audited) for one lock file."""
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "-r",
        str(ROOT / lock),
        "--disable-pip",
    ]
    command += ["--no-deps", "--progress-spinner", "off", "--format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        return [], [f"{lock}: pip-audit gave no report ({done.stderr.strip()[-300:]})"]
    return summarize(report)


def summarize(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A pip-audit JSON report as (vulnerabilities found, dependencies not audited)."""
    found, skipped = [], []
    for dependency in report["dependencies"]:
        for vulnerability in dependency.get("vulns", []):
            fixed = ", ".join(vulnerability.get("fix_versions", [])) or "no fix yet"
            found.append(f"{dependency['name']} {dependency['version']}: "
                         f"{vulnerability['id']} (fixed in {fixed})")  # fmt: skip
        if "skip_reason" in dependency:
            skipped.append(dependency["name"])
    return found, skipped


def main() -> int:
    failures = 0
    for lock in LOCKS:
        found, skipped = audit(lock)
        for line in found:
            print(f"VULNERABLE  {line}")
        failures += len(found)
        if skipped:
            print(f"NOT AUDITED {lock}: {len(skipped)} dependencies could not be "
                  f"checked (the vulnerability service did not answer for them): "
                  f"{', '.join(skipped)}")  # fmt: skip
        else:
            print(f"audited     {lock}: no known vulnerability")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
