"""`jointcredit sweep`: the grid is validated before anything runs (a cell that could not run
is refused: tests/test_settings.py), cells are deduplicated, every run's outputs are kept, a
re-run resumes, and a cell that fails while running is reported, not fatal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from jointcredit.federation.metrics import RunMetrics
from jointcredit.simulations.sweep import cells, load_grid

GRID = """\
seeds = [1]
[base]
dataset = "synthetic"
institutions = 5
synthetic-rows = 600
rounds = 2
min-valid-fraction = 1.0
[grid]
aggregator = ["median"]
attack = ["sign-flip"]
attackers = [1]
adversary = ["", "bank-00:unsigned"]
"""


def _grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_grid_is_checked_and_deduplicated(tmp_path: Path) -> None:
    grid = load_grid(_grid(tmp_path, 'seeds = [1, 2]\n[grid]\nattack = ["none", "scale"]\n'
                                      "attackers = [1, 2]\n"))  # fmt: skip
    found = cells(grid, tmp_path / "out")
    # "none" with 1 or 2 attackers is one setting (no attackers); "scale" is two.
    assert sorted((c.setting["attack"], c.setting["attackers"], c.seed) for c in found) == [
        ("none", 0, 1), ("none", 0, 2), ("scale", 1, 1), ("scale", 1, 2), ("scale", 2, 1),
        ("scale", 2, 2),
    ]  # fmt: skip
    assert len({c.id for c in found}) == 6
    with pytest.raises(ValueError, match="aggregator"):
        cells(load_grid(_grid(tmp_path, '[grid]\naggregator = ["mean"]\n')), tmp_path)
    # A typo is named where it was written, with the nearest key, before any cell is built.
    with pytest.raises(ValueError, match=r"base\.rouds: not a setting \(did you mean rounds\?\)"):
        load_grid(_grid(tmp_path, "[base]\nrouds = 3\n"))
    with pytest.raises(ValueError, match=r"grid\.epsilom: .*did you mean epsilon\b"):
        load_grid(_grid(tmp_path, "[grid]\nepsilom = [1.0]\n"))
    with pytest.raises(ValueError, match="empty list"):
        load_grid(_grid(tmp_path, "[grid]\nrounds = []\n"))
    with pytest.raises(ValueError, match="seeds"):
        load_grid(_grid(tmp_path, "[base]\nseed = 3\n"))


@pytest.mark.e2e
def test_sweep_runs_resumes_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jointcredit.cli", "sweep", "--grid",
           str(_grid(tmp_path, GRID)), "--out", str(out)]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    # An unsigned reply in every round, where every reply must verify: that cell fails while
    # running; the other stands.
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    assert list(results["adversary"].fillna("")) == ["", "bank-00:unsigned"]
    assert list(results["status"]) == ["done", "failed"]
    assert "unsigned" in results["error"].iloc[1]
    auc = results["auc"].iloc[0]
    assert auc > 0.7  # the median holds against the sign-flipping lender
    # The synthetic institutions' protected attributes: fairness beside utility and privacy.
    assert 0 < results["min_adverse_impact_ratio"].iloc[0] <= 1
    for name in ("results.json", "summary.md", "report.md", "auc_under_attack.png",
                 "wall_time.png", "fairness.png"):  # fmt: skip
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert 'adversary = ["", "bank-00:unsigned"]' in report and "Failed runs" in report
    cell = results["cell"].iloc[0]
    metrics = RunMetrics.read(out / "cells" / cell / "metrics.json")
    assert metrics.privacy.attack.kind == "sign-flip" and metrics.sweep_wall_seconds
    assert (out / "cells" / cell / "model" / "manifest.sig").is_file()
    # Resume: the finished cell is not run again (the failed one is retried, and fails again).
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.stdout.count("skipped (done before)") == 1, again.stdout[-3000:]
    assert pd.read_csv(out / "results.csv")["auc"].iloc[0] == auc


@pytest.mark.parametrize(
    "grid", sorted((Path(__file__).resolve().parents[1] / "simulations" / "grids").glob("*.toml"))
)
def test_every_shipped_grid_is_valid_before_it_runs(grid: Path, tmp_path: Path) -> None:
    found = cells(load_grid(grid), tmp_path)
    assert found and all(c.settings.min_nodes > 0 for c in found)


def test_a_cell_is_done_only_once_the_sweep_recorded_its_wall_time(tmp_path: Path) -> None:
    from jointcredit.simulations.sweep import _finished

    fixture = Path(__file__).parent / "fixtures" / "metrics-logreg-sample.json"
    metrics = RunMetrics.read(fixture)
    path = tmp_path / "metrics.json"
    assert _finished(path) is None  # nothing yet
    metrics.write(path)  # the ServerApp's part, the cell's process died afterwards
    assert _finished(path) is None
    metrics.sweep_wall_seconds = 12.5
    metrics.write(path)
    assert _finished(path) is not None
    path.write_text("{half a file")
    assert _finished(path) is None
