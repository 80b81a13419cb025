"""Start-up refuses what it cannot vouch for, naming why: a tampered or degenerate model, no
API keys; `jointcredit serve` then exits 2 before serving anything (run in process)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from service_helpers import signed_artifact
from typer.testing import CliRunner

from jointcredit.service.auth import new_key
from jointcredit.service.loader import StartupError, load_service


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("startup")
    signed_artifact(root)
    return root


def _serve(*args: str) -> tuple[int, str]:
    from jointcredit.cli.main import app

    result = CliRunner().invoke(app, ["serve", *args])
    return result.exit_code, result.stderr


def test_a_tampered_model_is_refused(run: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(run / "model", model_dir)
    keys = tmp_path / "keys.json"
    new_key(keys, "bank-a")
    weights = model_dir / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(StartupError, match=r"does not verify.*weights\.npz"):
        load_service(model_dir, run / "trust.json", api_keys=keys)
    code, err = _serve("--model", str(model_dir), "--trust", str(run / "trust.json"),
                       "--api-keys", str(keys))  # fmt: skip
    assert code == 2 and "does not verify" in err and "weights.npz" in err


def test_a_degenerate_model_is_refused(tmp_path: Path) -> None:
    zero_dir = signed_artifact(tmp_path, zero=True)
    keys = tmp_path / "keys.json"
    new_key(keys, "bank-a")
    code, err = _serve("--model", str(zero_dir), "--trust", str(tmp_path / "trust.json"),
                       "--api-keys", str(keys))  # fmt: skip
    assert code == 2 and "all zero" in err


def test_no_api_keys_no_service(run: Path) -> None:
    with pytest.raises(StartupError, match="apikey new"):
        load_service(run / "model", run / "trust.json")
    code, err = _serve("--model", str(run / "model"), "--trust", str(run / "trust.json"))
    assert code == 2 and "apikey new" in err
