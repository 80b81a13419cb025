"""`link run` stages the app before `flwr run` packs it: the FAB must be the one Flower builds
from the app directory itself, byte for byte, while the ignored trees are never walked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from jointcredit.deploy.fab import app_files, staged_app

ROOT = Path(__file__).resolve().parents[1]

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "demo"
version = "1.0.0"
dependencies = ["flwr"]

[tool.flwr.app]
publisher = "jointcredit"

[tool.flwr.app.components]
serverapp = "demo.server:app"
clientapp = "demo.client:app"
"""


def _app(root: Path, gitignore: str) -> Path:
    files = {
        "pyproject.toml": PYPROJECT,
        ".gitignore": gitignore,
        "README.md": "# demo\n",
        "demo/__init__.py": "",
        "demo/server.py": "app = None\n",
        "demo/client.py": "app = None\n",
        "demo/data/spec.json": "{}\n",
        "demo/test_server.py": "def test(): pass\n",  # Flower's own exclude rule
        "demo/notes.txt": "not a FAB file type\n",
        ".venv/lib/site.py": "x = 1\n",  # ignored whole
        "runs/r1/metrics.json": "{}\n",  # ignored whole
        "keep/skip.pyc": "",
        "keep/ok.py": "y = 2\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    outside = root.parent / "outside.py"
    outside.write_text("z = 3\n")
    os.symlink(outside, root / "demo" / "linked.py")  # Flower skips symlinks
    return root


@pytest.mark.parametrize(
    "gitignore", [".venv/\nruns/\n*.pyc\n", ".venv/\nruns/\n*.pyc\n!keep/ok.py\n", ""]
)
def test_the_staged_app_packs_into_the_same_fab(tmp_path: Path, gitignore: str) -> None:
    app = _app(tmp_path / "app", gitignore)
    with staged_app(app) as staged:
        assert build_fab_from_disk(staged) == build_fab_from_disk(app)
        assert not (staged / "demo" / "linked.py").exists()


def test_ignored_directories_are_not_walked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(tmp_path / "app", ".venv/\nruns/\n")
    walked: list[str] = []
    real_walk = os.walk

    def spy(top: Path, **kwargs: bool):  # type: ignore[no-untyped-def]
        for dirpath, dirnames, filenames in real_walk(top, **kwargs):
            walked.append(Path(dirpath).relative_to(app.resolve()).as_posix())
            yield dirpath, dirnames, filenames

    monkeypatch.setattr("jointcredit.deploy.fab.os.walk", spy)
    files = app_files(app)
    assert not [d for d in walked if d.startswith((".venv", "runs"))]
    assert "demo/server.py" in files and ".venv/lib/site.py" not in files
    # A negated pattern turns pruning off (git's re-include rules are not reimplemented).
    (app / ".gitignore").write_text(".venv/\n!.venv/lib/site.py\n")
    walked.clear()
    app_files(app)
    assert ".venv/lib" in walked


@pytest.mark.integration
def test_this_repository_stages_into_the_same_fab() -> None:
    with staged_app(ROOT) as staged:
        assert build_fab_from_disk(staged) == build_fab_from_disk(ROOT)
