"""The dependency audit fails on a known vulnerability, names what it cannot check."""

from scripts.audit_dependencies import summarize


def test_audit_reports_vulnerabilities_and_what_it_could_not_check() -> None:
    report = {
        "dependencies": [
            {"name": "flask", "version": "3.1.3", "vulns": []},
            {"name": "oldlib", "version": "1.0", "vulns": [
                {"id": "PYSEC-2099-1", "fix_versions": ["1.1"]}]},
            {"name": "redis", "skip_reason": "Dependency not found on PyPI"},
        ],
        "fixes": [],
    }  # fmt: skip
    found, skipped = summarize(report)
    assert found == ["oldlib 1.0: PYSEC-2099-1 (fixed in 1.1)"]
    assert skipped == ["redis"]
