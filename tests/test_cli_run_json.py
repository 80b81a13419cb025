"""`simulate --json` and `sweep --json` at 80 columns: one JSON document on stdout (progress and
logs elsewhere) with the facts the tables show, under the keys their help names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SMALL = ["--dataset", "synthetic", "--institutions", "3", "--synthetic-rows", "600",
         "--rounds", "1"]  # fmt: skip


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jointcredit.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "COLUMNS": "80"})  # fmt: skip


def test_simulate_json(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run("simulate", *SMALL, "--no-baselines", "--no-audit", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    facts = json.loads(proc.stdout)  # nothing else on stdout
    assert list(facts)[:3] == ["out", "model", "metrics_file"]
    assert Path(facts["metrics_file"]).is_file() and Path(facts["model"]).is_dir()
    metrics = json.loads(Path(facts["metrics_file"]).read_text())
    for key in ("institutions", "federated", "per_institution", "security", "privacy",
                "trained_rounds", "fairness", "timing"):  # fmt: skip
        assert facts[key] == metrics[key], key
    assert facts["centralized"] is None and facts["local_only"] is None  # --no-baselines
    assert len(facts["institutions"]) == 3 and facts["trained_rounds"] == 1


def test_sweep_json(tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text('seeds = [1]\n[base]\ndataset = "synthetic"\ninstitutions = 3\n'
                    'synthetic-rows = 600\nrounds = 1\n[grid]\nprivacy = ["none"]\n'
                    "epsilon = [1.0]\n")  # fmt: skip
    out = tmp_path / "sweep"
    proc = _run("sweep", "--grid", str(grid), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    facts = json.loads(proc.stdout)
    assert facts["runs"] == 1 and facts["failed"] == 0
    assert Path(facts["report"]).is_file() and "wall_time.png" in facts["plots"]
    (setting,) = facts["settings"]
    assert setting["setting"] == "privacy=none, no DP"
    assert setting["values"] == {"privacy": "none", "epsilon": None}
    assert 0.5 < setting["auc"]["mean"] <= 1 and setting["auc"]["sd"] is None  # one seed
    (cell,) = facts["cells"]
    assert cell["status"] == "done" and cell["error"] is None and cell["seed"] == 1
