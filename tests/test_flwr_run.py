"""`flwr run .` works as Flower users expect: real SuperLink, real status, nothing left running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def _running(flwr_home: Path) -> bool:
    probe = subprocess.run(["pgrep", "-f", f"flower-superlink.*{flwr_home}"], capture_output=True)
    return probe.returncode == 0


def _flwr_run(tmp_path: Path, run_config: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "OUT": str(tmp_path / "out"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    return subprocess.run(
        ["bash", "scripts/flwr_run_local.sh", "2", run_config],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.skipif(shutil.which("pgrep") is None, reason="needs pgrep")
def test_flwr_run_completes_and_stops_its_superlink(tmp_path: Path) -> None:
    proc = _flwr_run(tmp_path, "rounds=1 finetune-epochs=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "finished:completed" in proc.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(metrics["institutions"]) == 2 and len(metrics["rounds"]) == 1
    # Keys were generated for the run, every reply verified, the model is signed, and no
    # private key outlives the run.
    from jointcredit.models.artifact import load_artifact
    from jointcredit.trust.store import load_store

    out = tmp_path / "out"
    # query, train, evaluate, the personalisation prior's query, final evaluate (with the
    # training reference's counts)
    assert metrics["security"]["verified_replies"] == 2 * 5
    load_artifact(out / "model", load_store(out / "trust.json"))
    assert not (out / "keys").exists()
    deadline = time.monotonic() + 20
    while _running(tmp_path / "flwr-home") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _running(tmp_path / "flwr-home")


def test_failed_run_is_reported_as_failure(tmp_path: Path) -> None:
    # Settings that cannot work are refused before a SuperLink starts.
    refused = _flwr_run(tmp_path, "rounds=1 strategy='nope'")
    assert refused.returncode == 2 and "strategy" in refused.stderr
    assert not (tmp_path / "flwr-home" / "local-superlink").exists()
    # A run that fails inside the ServerApp (an unsigned reply where every reply must verify)
    # is reported as failed, though `flwr run --stream` itself exits 0.
    proc = _flwr_run(
        tmp_path, "rounds=1 min-valid-fraction=1.0 adversary='bank-of-america-natl-assoc:unsigned'"
    )
    assert proc.returncode != 0
    assert "finished:failed" in proc.stdout
