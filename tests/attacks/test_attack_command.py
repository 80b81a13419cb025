"""`make attack` (issue 19: the fuzzing and kill -9 runs as one command, bounded in time, on
loopback only): `scripts/attack.py` at its smallest runs every phase end to end against a real
`jointcredit serve` and writes a summary with every figure docs/SECURITY.md reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import signed_artifact

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "attack.py"


def test_the_attack_command_runs_end_to_end(tmp_path: Path) -> None:
    signed_artifact(tmp_path / "run")
    out = tmp_path / "attack"
    cmd = [sys.executable, str(SCRIPT), "--run", str(tmp_path / "run"), "--out", str(out),
           "--requests", "200", "--trials", "1", "--setups", "one-worker", "--minutes", "3",
           "--no-suite"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["host"] == "127.0.0.1" and summary["missed"] == []
    fuzz = summary["fuzz"]
    assert fuzz["sent"] == 200 and fuzz["server_errors_5xx"] == 0
    assert fuzz["dropped_connections"] == 0 and sum(fuzz["statuses"].values()) == 200
    kill = summary["kill"]
    assert kill["trials"] == 1 and kill["acknowledged"] > 0 and kill["lost"] == 0
    assert kill["logged"] == kill["acknowledged"] and kill["audit_verify_failures"] == 0
    tampering, artifact = summary["files"]["tampering"], summary["files"]["artifact"]
    assert tampering["caught"] == tampering["cases"] >= 20 and tampering["needing_anchors"] == 3
    assert artifact["refused"] == artifact["cases"] >= 13  # no checkpoint here: 2 fewer
    assert "| 5xx / dropped connections | 0 / 0 | 0 / 0 |" in done.stdout
    assert (out / "summary.md").read_text().strip() in done.stdout
