"""Attack: a failed run damaged the previous one (issue 19, item 15). A run into an existing
OUT that failed overwrote OUT/trust.json and left the old OUT/model, which then no longer
verified. A run is now written beside OUT and moved into place only when it succeeded; a
non-empty OUT is refused unless --force."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from service_helpers import signed_artifact
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import load_artifact
from jointcredit.simulations import simulate as simulate_module
from jointcredit.trust.store import load_store


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    """OUT holding a previous run's verified model and trust store."""
    made = tmp_path / "made"
    made.mkdir()
    signed_artifact(made)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(made / "model", out / "model")
    shutil.copy(made / "trust.json", out / "trust.json")
    return out


def test_a_run_that_fails_midway_leaves_the_previous_out_untouched(
    previous: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _digests(previous)

    def fails_after_writing(settings: RunSettings, **_: Any) -> None:
        run_dir = Path(settings.out_dir)
        (run_dir / "trust.json").write_text("{}")  # what the ServerApp writes first
        (run_dir / "model").mkdir()
        raise RuntimeError("an institution dropped out")

    monkeypatch.setattr(simulate_module, "run_simulation", fails_after_writing)
    settings = RunSettings.from_run_config(
        {"institutions": 3, "rounds": 1, "out-dir": str(previous)}
    )
    with pytest.raises(RuntimeError, match="dropped out"):
        simulate_module.simulate(settings, with_baselines=False, with_audit=False)
    assert _digests(previous) == before
    load_artifact(previous / "model", load_store(previous / "trust.json"))  # still verifies
    assert [p.name for p in previous.parent.iterdir() if ".partial-" in p.name] == []


def test_a_non_empty_out_is_refused_without_force(previous: Path) -> None:
    before = _digests(previous)
    result = CliRunner().invoke(app, ["simulate", "--out", str(previous), "--rounds", "1"])
    assert result.exit_code == 2 and "--force" in result.output
    assert _digests(previous) == before
