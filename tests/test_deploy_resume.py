"""`link run --resume`'s check before anything starts: the run directory's latest checkpoint
verifies against the kit's trust store and records the settings given now."""

from __future__ import annotations

from pathlib import Path

import pytest

from jointcredit.deploy.resume import check_resume, resume_config, superseded_run
from jointcredit.federation.checkpoints import MANIFEST_RUN_ID, checkpoint_dir
from jointcredit.federation.settings import RunSettings, SettingsError
from jointcredit.trust import keys
from jointcredit.trust.keyset import COORDINATOR, create_key_set
from jointcredit.trust.manifest import sign_directory

SETTINGS = RunSettings.from_run_config({"rounds": 4, "model": "logreg"})


def _checkpoint(run: Path, kit: Path, server_round: int, run_id: int | None = None) -> Path:
    path = checkpoint_dir(run, server_round)
    path.mkdir(parents=True)
    (path / "weights.npz").write_bytes(b"weights of round %d" % server_round)
    trust = create_key_set(kit, ["bank-a", "bank-b"], federation="resume-test")
    key = keys.load_private_key(kit / f"{COORDINATOR}.key")
    manifest = {"training": SETTINGS.provenance()}
    if run_id is not None:
        manifest[MANIFEST_RUN_ID] = run_id
    sign_directory(path, ["weights.npz"], manifest, key, trust)
    return path


def test_resume_checks_the_latest_checkpoint_and_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the pins file of this federation
    run, kit = tmp_path / "run", tmp_path / "kit"
    with pytest.raises(ValueError, match="no checkpoint"):
        check_resume(run, kit, SETTINGS)
    _checkpoint(run, kit, 1)
    latest = _checkpoint(run, tmp_path / "kit2", 2)  # signed by another coordinator
    with pytest.raises(ValueError, match=r"refusing to resume from .*round-002"):
        check_resume(run, kit, SETTINGS)
    assert check_resume(run, tmp_path / "kit2", SETTINGS) == latest
    changed = SETTINGS.replaced(rounds=6, seed=1, resume=True, out_dir="/elsewhere")
    with pytest.raises(SettingsError, match=r"rounds, seed$"):
        check_resume(run, tmp_path / "kit2", changed)
    (latest / "weights.npz").write_bytes(b"other weights")
    with pytest.raises(ValueError, match=r"weights\.npz"):
        check_resume(run, tmp_path / "kit2", SETTINGS)


def test_resume_continues_with_the_settings_the_checkpoint_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`link run --resume RUN_DIR` needs no keys: the checkpoint's signed settings are the
    run's (the app's defaults would otherwise resume another model); keys given must agree."""
    monkeypatch.setenv("HOME", str(tmp_path))
    run, kit = tmp_path / "run", tmp_path / "kit"
    _checkpoint(run, kit, 1)
    config = resume_config(run, kit, {"out-dir": "/here"})
    assert config["model"] == "logreg" and config["rounds"] == 4
    assert config["out-dir"] == "/here"  # where this machine keeps it: as given
    assert RunSettings.from_run_config(config).differences(SETTINGS.provenance()) == []
    assert resume_config(run, kit, {"rounds": 4})["rounds"] == 4
    with pytest.raises(SettingsError, match=r"checkpoint .*round-001: model, rounds \("):
        resume_config(run, kit, {"rounds": 6, "model": "mlp"})
    with pytest.raises(SettingsError, match="no-such-key"):
        resume_config(run, kit, {"no-such-key": 1})


def test_the_resume_supersedes_the_run_that_signed_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _checkpoint(tmp_path / "run", tmp_path / "kit", 1)
    assert superseded_run(tmp_path / "run", tmp_path / "kit") is None  # nothing to stop
    _checkpoint(tmp_path / "run2", tmp_path / "kit2", 2, run_id=7164716280957313210)
    assert superseded_run(tmp_path / "run2", tmp_path / "kit2") == 7164716280957313210
