"""Attack: serving a model the validation team never promoted (issue 21). `serve
--require-promotion` starts only on a model with its coordinator-signed promotion record: it
refuses a missing record, an edited one, one signed by any key but the trust store's
coordinator key, a symlink, and a genuine record copied beside another model."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from report_helpers import FAIRNESS, run_dir
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.models.promotion import PROMOTION
from jointcredit.service.auth import new_key
from jointcredit.service.loader import StartupError, load_service
from jointcredit.trust import keys
from jointcredit.trust.canonical import canonical_json
from jointcredit.trust.manifest import MANIFEST, sign_directory
from jointcredit.trust.store import load_store

GATES = "min_auc = 0.7\nmax_mia_auc = 0.6\n"


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose model was promoted through the CLI, with an API key for the service."""
    root = tmp_path_factory.mktemp("promoted")
    out = run_dir(root, fairness=FAIRNESS)
    (root / "gates.toml").write_text(GATES)
    result = CliRunner().invoke(
        app,
        ["promote", str(out / "model"), "--gates", str(root / "gates.toml"),
         "--key", str(root / "keys" / "coordinator.key"), "--trust-any-coordinator"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    new_key(out / "api-keys.json", "bank-a")
    return out


def _load(out: Path, model: Path | None = None, *, require: bool = True) -> None:
    service = load_service(
        model or out / "model",
        out / "trust.json",
        api_keys=out / "api-keys.json",
        db_url="sqlite://",
        require_promotion=require,
    )
    service.audit.close()


def _copy(promoted: Path, tmp_path: Path) -> Path:
    """The run with its own copy of the model (to attack without touching the fixture)."""
    out = tmp_path / "out"
    shutil.copytree(promoted, out)
    return out


def test_a_promoted_model_is_served(promoted: Path) -> None:
    _load(promoted)


def test_an_unpromoted_model_is_refused_only_when_promotion_is_required(
    promoted: Path, tmp_path: Path
) -> None:
    out = _copy(promoted, tmp_path)
    (out / "model" / PROMOTION).unlink()
    _load(out, require=False)
    with pytest.raises(StartupError, match="never promoted"):
        _load(out)


def test_an_edited_record_is_refused(promoted: Path, tmp_path: Path) -> None:
    out = _copy(promoted, tmp_path)
    path = out / "model" / PROMOTION
    doc = json.loads(path.read_text())
    doc["record"]["gates"][0]["threshold"] = 0.5  # a laxer gate after signing
    path.write_text(json.dumps(doc))
    with pytest.raises(StartupError, match="signature does not verify"):
        _load(out)


def test_a_record_signed_by_another_key_is_refused(promoted: Path, tmp_path: Path) -> None:
    out = _copy(promoted, tmp_path)
    path = out / "model" / PROMOTION
    doc = json.loads(path.read_text())
    forger = keys.generate()
    body = {**doc["record"], "signed_by": keys.key_id(forger)}
    doc = {
        "record": body,
        "signature": {
            "scheme": "ed25519",
            "key_id": keys.key_id(forger),
            "signature": base64.b64encode(forger.sign(canonical_json(body))).decode(),
        },
    }
    path.write_bytes(canonical_json(doc))
    with pytest.raises(StartupError, match="not by the coordinator key"):
        _load(out)


def test_a_promotion_copied_beside_another_model_is_refused(promoted: Path, tmp_path: Path) -> None:
    """Another model of the same federation, signed by the same coordinator (here the same
    files under a re-signed manifest of another round), with the first model's promotion."""
    out = _copy(promoted, tmp_path)
    model = out / "model"
    manifest = json.loads((model / MANIFEST).read_bytes())
    body = {k: v for k, v in manifest.items()
            if k not in ("format", "files", "trust_store_sha256", "signed_by")}  # fmt: skip
    body["round"] = 1
    coordinator = keys.load_private_key(promoted.parent / "keys" / "coordinator.key")
    sign_directory(
        model, list(manifest["files"]), body, coordinator, load_store(out / "trust.json")
    )
    with pytest.raises(StartupError, match="a promotion copied beside another model"):
        _load(out)


def test_a_symlinked_record_is_refused(promoted: Path, tmp_path: Path) -> None:
    out = _copy(promoted, tmp_path)
    path = out / "model" / PROMOTION
    real = tmp_path / "elsewhere.json"
    shutil.move(path, real)
    path.symlink_to(real)
    with pytest.raises(StartupError, match="cannot be read as a file"):
        _load(out)


def test_serve_exits_2_naming_the_missing_promotion(promoted: Path, tmp_path: Path) -> None:
    out = _copy(promoted, tmp_path)
    (out / "model" / PROMOTION).unlink()
    result = CliRunner().invoke(
        app,
        ["serve", "--model", str(out / "model"), "--trust", str(out / "trust.json"),
         "--api-keys", str(out / "api-keys.json"), "--db", "sqlite://",
         "--trust-any-coordinator", "--require-promotion"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--require-promotion" in result.output and "never promoted" in result.output
