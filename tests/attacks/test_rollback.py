"""Attack: rollback to a checkpoint (issue 19, item 3). `cp -r OUT/checkpoints/round-001
OUT/model` verified and was served under the pinned coordinator key. A signed artifact now
says what it is (a run's final model or the checkpoint of round N, and the run), inside what
is signed; serve, score and decide refuse a checkpoint unless explicitly asked, and say what
they load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from service_helpers import signed_artifact
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.models.artifact import ArtifactError, load_artifact
from jointcredit.service.auth import new_key
from jointcredit.service.loader import StartupError, load_service
from jointcredit.trust.manifest import MANIFEST
from jointcredit.trust.store import load_store


@pytest.fixture(scope="module")
def rolled_back(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose model/ is a copy of a round's checkpoint."""
    root = tmp_path_factory.mktemp("rollback")
    checkpoint = signed_artifact(root, stage="checkpoint")
    out = root / "out"
    out.mkdir()
    shutil.copytree(checkpoint, out / "model")
    shutil.copy(root / "trust.json", out / "trust.json")
    new_key(out / "api-keys.json", "bank-a")
    return out


def test_the_checkpoint_says_what_it_is(rolled_back: Path) -> None:
    model = load_artifact(rolled_back / "model", load_store(rolled_back / "trust.json"))
    assert (model.stage, model.trained_round, model.run_id) == ("checkpoint", 2, 7)
    assert model.describe() == "a checkpoint of round 2 of run 7, not its final model"


def test_the_service_refuses_a_checkpoint_unless_asked(rolled_back: Path) -> None:
    args = {"api_keys": rolled_back / "api-keys.json", "db_url": "sqlite://"}
    with pytest.raises(StartupError, match="checkpoint of round 2 of run 7"):
        load_service(rolled_back / "model", rolled_back / "trust.json", **args)
    service = load_service(rolled_back / "model", rolled_back / "trust.json",
                           allow_checkpoint=True, **args)  # fmt: skip
    assert (service.model_info.stage, service.model_info.run_id) == ("checkpoint", 7)
    service.audit.close()


@pytest.mark.parametrize("command", ["score", "decide"])
def test_score_and_decide_refuse_a_checkpoint_unless_asked(rolled_back: Path, command: str) -> None:
    runner = CliRunner()
    refused = runner.invoke(app, [command, str(rolled_back / "model"), "--sample", "2"])
    assert refused.exit_code == 2 and "checkpoint of round 2 of run 7" in refused.output
    allowed = runner.invoke(
        app, [command, str(rolled_back / "model"), "--sample", "2", "--allow-checkpoint"]
    )
    assert allowed.exit_code == 0, allowed.output
    assert "using a checkpoint of round 2 of run 7" in allowed.output


def test_verify_says_it_is_a_checkpoint(rolled_back: Path) -> None:
    result = CliRunner().invoke(
        app, ["verify", str(rolled_back / "model"), "--trust", str(rolled_back / "trust.json")]
    )
    assert result.exit_code == 0 and "a checkpoint of round 2 of run 7" in result.output


def test_relabelling_a_checkpoint_as_final_breaks_the_signature(
    rolled_back: Path, tmp_path: Path
) -> None:
    forged = tmp_path / "model"
    shutil.copytree(rolled_back / "model", forged)
    manifest = json.loads((forged / MANIFEST).read_bytes())
    manifest["stage"] = "final"
    (forged / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError):
        load_artifact(forged, load_store(rolled_back / "trust.json"))
