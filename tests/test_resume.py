"""A simulation that crashes after a checkpoint and is resumed: same model as an uninterrupted
run where the institutions' state survived, no round lost or repeated, budgets held, changed
settings and tampered checkpoints refused."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from resume_helpers import reliability_script

from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import load_artifact
from jointcredit.simulations.simulate import simulate
from jointcredit.trust.store import load_store

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {
    "dataset": "synthetic",
    "institutions": 2,
    "synthetic-rows": 600,
    "rounds": 3,
    "model": "logreg",
    "finetune-epochs": 0,
}


# The coordinator is SIGKILLed right after it wrote the checkpoint of round `after`: the
# ServerApp runs in the simulating process, so that process kills itself there.
DRIVER = """
import json, os, signal, sys
from jointcredit.federation.settings import RunSettings
from jointcredit.server import tracker
from jointcredit.simulations.simulate import simulate

settings, after = json.loads(sys.argv[1]), int(sys.argv[2])
original = tracker.RoundTracker.evaluate_fn

def evaluate_then_die(self, server_round, arrays):
    result = original(self, server_round, arrays)
    if server_round == after:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

tracker.RoundTracker.evaluate_fn = evaluate_then_die
simulate(
    RunSettings.model_validate(settings), with_baselines=False, with_audit=False, resumable=True
)
"""


def crashed_run(out: Path, after: int, **settings: Any) -> Path:
    """The staging directory a coordinator SIGKILLed after round `after` left."""
    config = json.dumps({**BASE, **settings, "out-dir": str(out)})
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, config, str(after)], capture_output=True, timeout=600
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    (staging,) = out.parent.glob(f".{out.name}.partial-*")
    return staging


def _settings(out: Path, **settings: Any) -> RunSettings:
    return RunSettings.model_validate({**BASE, **settings, "out-dir": str(out)})


def _resume(out: Path) -> dict[str, Any]:
    """`simulate --resume OUT`, as a user runs it (in its own process: several simulations in
    one process can trip CPython 3.11's AST race when Flower validates the app)."""
    cmd = [sys.executable, "-m", "jointcredit.cli", "simulate", "--resume", str(out),
           "--no-baselines", "--no-audit"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads((out / "metrics.json").read_text()))


def _weights(out: Path) -> bytes:
    return (out / "model" / "weights.npz").read_bytes()


@pytest.fixture(scope="module")
def scaffold_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """An uninterrupted SCAFFOLD run, and the run directory of the same run killed after
    round 1, twice (`kept`, `lost`: one per case below)."""
    root = tmp_path_factory.mktemp("scaffold")
    whole = root / "whole"
    simulate(_settings(whole, strategy="scaffold"), with_baselines=False, with_audit=False)
    staging = crashed_run(root / "kept", after=1, strategy="scaffold")
    assert sorted(p.name for p in (staging / "checkpoints").iterdir()) == ["round-001"]
    shutil.copytree(staging, root / staging.name.replace(".kept.", ".lost."))
    return whole, root / "kept", root / "lost"


def test_resumed_scaffold_equals_uninterrupted_where_the_institutions_kept_c_i(
    scaffold_runs: tuple[Path, Path, Path],
) -> None:
    whole, kept, _ = scaffold_runs
    metrics = _resume(kept)
    assert _weights(kept) == _weights(whole)  # bit for bit
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3]
    assert all(not r.get("scaffold_fresh_control") for r in metrics["rounds"][1:])
    manifest = json.loads((kept / "model" / "manifest.json").read_text())
    assert [r["from_round"] for r in manifest["resumes"]] == [1]
    assert [u["round"] for u in manifest["updates"]] == [1, 2, 3]
    load_artifact(kept / "model", load_store(kept / "trust.json"))  # verifies
    assert not (kept / "keys").exists()
    assert not list(kept.parent.glob(".kept.partial-*"))


def test_resumed_scaffold_differs_and_says_so_where_the_institutions_lost_c_i(
    scaffold_runs: tuple[Path, Path, Path],
) -> None:
    whole, _, lost = scaffold_runs
    (staging,) = lost.parent.glob(".lost.partial-*")
    for f in (staging / "institutions").rglob("*"):
        if f.is_file():
            f.unlink()
    metrics = _resume(lost)
    assert _weights(lost) != _weights(whole)
    # The resumed rounds corrected with zero: every institution reports it.
    assert metrics["rounds"][1]["scaffold_fresh_control"] == metrics["institutions"]


def test_dp_budget_holds_across_a_crash_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "dp"
    dp = {"privacy": "dp-record", "epsilon": 2.0}
    crashed_run(out, after=2, **dp)
    metrics = _resume(out)
    script = reliability_script()
    spent = script.ledgers(out)
    assert sorted(spent) == metrics["institutions"]
    steps_per_round = None
    for inst, history in spent.items():
        epsilon = script.reference_epsilon(history, metrics["privacy"]["delta"])
        assert epsilon <= 2.0 + 1e-6, (inst, epsilon)
        assert metrics["privacy"]["epsilon_per_institution"][inst] == pytest.approx(epsilon, 1e-3)
        steps_per_round = metrics["privacy"]["record_dp"]["steps"][inst] / 3
        assert sum(int(s) for _, _, s in history) == 3 * steps_per_round  # three rounds' steps
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3]
    assert metrics["trained_rounds"] == 3


def test_resume_refuses_changed_settings_and_a_tampered_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    staging = crashed_run(out, after=1)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "jointcredit.cli", "simulate", "--resume", str(out), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    proc = cli("--rounds", "5", "--seed", "7")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "rounds, seed" in proc.stderr and "Traceback" not in proc.stderr

    weights = staging / "checkpoints" / "round-001" / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 1
    weights.write_bytes(bytes(data))
    proc = cli()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refusing to resume" in proc.stderr and "weights.npz" in proc.stderr
    assert staging.exists()  # the killed run is left as it was

    # A run not started with --resumable keeps no key: it cannot be continued.
    shutil.rmtree(staging / "keys")
    proc = cli()
    assert proc.returncode == 2 and "--resumable" in proc.stderr, proc.stderr[-2000:]
