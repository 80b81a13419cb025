"""`--json` on `verify` and `data check`: one JSON document on stdout with the facts the text
shows, on success and on failure, with the same exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from service_helpers import signed_artifact
from typer.testing import CliRunner

from jointcredit.cli.main import app

pytestmark = pytest.mark.integration


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout


def test_verify_json(tmp_path: Path) -> None:
    model = signed_artifact(tmp_path)
    code, out = _cli("verify", str(model), "--trust", str(tmp_path / "trust.json"), "--json")
    assert code == 0, out
    facts = json.loads(out)
    assert facts["verified"] is True and "weights.npz" in facts["files"]
    assert len(facts["manifest_sha256"]) == 64 and facts["coordinator_key_id"]
    with (model / "model.json").open("a") as f:
        f.write(" ")
    code, out = _cli("verify", str(model), "--trust", str(tmp_path / "trust.json"), "--json")
    assert code == 1
    failed = json.loads(out)
    assert failed["verified"] is False and "model.json" in failed["error"]


def test_data_check_json(byod_dir: Path) -> None:
    code, out = _cli("data", "check", str(byod_dir), "--json")
    assert code == 0, out
    facts = json.loads(out)
    assert set(facts["institutions"]) == {"bank-a", "bank-b", "lender-c"}
    assert facts["institutions"]["bank-a"]["rows"] == 300
    (byod_dir / "bank-a.csv").write_text("nonsense\n1\n")
    code, out = _cli("data", "check", str(byod_dir), "--json")
    assert code == 2
    assert json.loads(out)["ok"] is False
