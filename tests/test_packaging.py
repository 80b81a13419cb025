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
