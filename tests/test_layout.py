"""The layout the style guide promises: one shared core that imports no service,
services that never import each other, a README whose module map names every module."""

import ast
import re
from pathlib import Path

import pytest

from harness.processes import ROOT

PACKAGES = ("pipeline_core", "dispatcher", "consumer", "cli", "harness", "chaos",
            "bench", "scripts")  # fmt: skip
# What each package may import from the others (besides itself).
ALLOWED = {
    "pipeline_core": set(),
    "dispatcher": {"pipeline_core"},
    "consumer": {"pipeline_core"},
    "cli": {"pipeline_core"},
    "harness": {"pipeline_core"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str) -> list[Path]:
    """Every module of the package, its sub-packages' too (dispatcher/console/)."""
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layout_imports_stay_within_what_the_package_may_use(package: str) -> None:
    others = set(PACKAGES) - {package}
    for path in modules(package):
        used = imported_packages(path) & others
        assert used <= ALLOWED[package], f"{path.relative_to(ROOT)} imports {used}"


def test_layout_readme_module_map_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in modules(package)
        if path.name != "__init__.py" and f"`{path.relative_to(ROOT)}`" not in readme
    ]
    assert missing == [], f"README's module map misses {missing}"


def test_layout_readme_links_point_at_files_that_exist() -> None:
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in _links(document.read_text()):
            path = (document.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{document.name} links to missing {target}"


def _links(text: str) -> list[str]:
    found = re.findall(r"\]\(([^)#][^)]*)\)", text)
    return [link for link in found if not link.startswith("http")]


# A variable read through the shared reader (pipeline_core/env.py) or os.environ.
ENV_READ = re.compile(r'(?:env, |environ\.get\(|environ\[)"([A-Z][A-Z0-9_]+)"')


def test_layout_every_variable_a_service_reads_is_in_the_configuration_doc() -> None:
    documented = (ROOT / "docs" / "configuration.md").read_text()
    read = {
        name
        for package in ("pipeline_core", "dispatcher", "consumer", "cli")
        for path in modules(package)
        for name in ENV_READ.findall(path.read_text())
    }
    assert len(read) > 30  # the pattern still finds them
    missing = sorted(name for name in read if f"`{name}`" not in documented)
    assert not missing, f"docs/configuration.md lacks {missing}"
