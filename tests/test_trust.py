"""Keys, the signed trust store and signed artifacts, through the `jointcredit` CLI as users
run it (keys new, trust init/add/revoke/show, verify)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.data.schema import Schema
from jointcredit.models.artifact import ArtifactError, load_artifact, save_artifact
from jointcredit.models.learners import architecture
from jointcredit.models.preprocessing import agree, summarize
from jointcredit.trust import keys, store
from jointcredit.trust.errors import TrustError
from jointcredit.trust.manifest import MANIFEST, SIGNATURE

runner = CliRunner()


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, " ".join(result.output.split())  # rich wraps at 80 columns


@pytest.fixture
def federation(tmp_path: Path) -> Path:
    """A coordinator and two institutions set up with the CLI; returns the directory."""
    for args in (
        ("keys", "new", "--coordinator", "--out", str(tmp_path / "coord")),
        ("keys", "new", "--institution", "bank-a", "--out", str(tmp_path / "bank-a")),
        ("keys", "new", "--institution", "cf-b", "--out", str(tmp_path / "cf-b")),
        ("trust", "init", "--out", str(tmp_path / "trust.json"), "--federation", "demo",
         "--coordinator-key", str(tmp_path / "coord" / "coordinator.key")),
    ):  # fmt: skip
        code, out = _cli(*args)
        assert code == 0, out
    for inst in ("bank-a", "cf-b"):
        code, out = _cli(
            "trust", "add", "--trust", str(tmp_path / "trust.json"), "--institution", inst,
            "--public-key", str(tmp_path / inst / f"{inst}.pub"),
            "--coordinator-key", str(tmp_path / "coord" / "coordinator.key"),
        )  # fmt: skip
        assert code == 0, out
    return tmp_path


def test_private_keys_are_0600_and_never_overwritten(federation: Path) -> None:
    key_file = federation / "bank-a" / "bank-a.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    code, out = _cli("keys", "new", "--institution", "bank-a", "--out", str(federation / "bank-a"))
    assert code == 2 and "refusing to overwrite" in out
    key_file.chmod(0o644)
    with pytest.raises(TrustError, match="too open"):
        keys.load_private_key(key_file)


def test_passphrase_encrypted_key(tmp_path: Path) -> None:
    env = {"JC_PASS": "correct horse"}
    code, out = _cli(
        "keys", "new", "--institution", "bank-z", "--out", str(tmp_path), "--passphrase-env",
        "JC_PASS", env=env,
    )  # fmt: skip
    assert code == 0 and "encrypted" in out
    assert b"ENCRYPTED" in (tmp_path / "bank-z.key").read_bytes()
    key = keys.load_private_key(tmp_path / "bank-z.key", b"correct horse")
    assert keys.key_id(key) == keys.key_id(keys.load_public_key(tmp_path / "bank-z.pub"))
    with pytest.raises(TrustError, match="wrong passphrase"):
        keys.load_private_key(tmp_path / "bank-z.key", b"wrong")
    with pytest.raises(TrustError):
        keys.load_private_key(tmp_path / "bank-z.key")


def test_trust_store_lists_keys_and_detects_hand_edits(federation: Path) -> None:
    trust_file = federation / "trust.json"
    code, out = _cli("trust", "show", str(trust_file))
    assert code == 0 and "bank-a" in out and "cf-b" in out and "signature OK" in out
    trust = store.load_store(trust_file)
    assert trust.version == 3 and set(trust.institutions) == {"bank-a", "cf-b"}

    # Un-revoking, or slipping in a key, by editing the JSON breaks the coordinator signature.
    data = json.loads(trust_file.read_text())
    data["institutions"]["mallory"] = data["institutions"]["bank-a"]
    (federation / "edited.json").write_text(json.dumps(data))
    code, out = _cli("trust", "show", str(federation / "edited.json"))
    assert code == 2 and "signature does not verify" in out

    # A whole store re-signed by someone else's key is caught by pinning the coordinator.
    mallory = keys.generate()
    forged = store.sign(
        trust.model_copy(
            update={
                "coordinator": store.CoordinatorKey(
                    key_id=keys.key_id(mallory), public_key=keys.public_b64(mallory.public_key())
                )
            }
        ),
        mallory,
    )
    store.save_store(federation / "forged.json", forged)
    assert store.load_store(federation / "forged.json")  # self-consistent...
    with pytest.raises(TrustError, match="not the pinned key"):
        store.load_store(federation / "forged.json", pin=trust.coordinator.key_id)


def test_revoke_and_rotate(federation: Path) -> None:
    trust_file = federation / "trust.json"
    coord = str(federation / "coord" / "coordinator.key")
    code, out = _cli(
        "trust", "revoke", "--trust", str(trust_file), "--institution", "bank-a",
        "--reason", "key leaked", "--coordinator-key", coord,
    )  # fmt: skip
    assert code == 0, out
    trust = store.load_store(trust_file)
    assert trust.active_keys("bank-a") == [] and trust.institutions["bank-a"][0].revoked
    assert trust.institutions["bank-a"][0].revoked_reason == "key leaked"
    # Rotation: a new key for the same institution.
    assert _cli("keys", "new", "--institution", "bank-a", "--out", str(federation / "new"))[0] == 0
    code, out = _cli(
        "trust", "add", "--trust", str(trust_file), "--institution", "bank-a",
        "--public-key", str(federation / "new" / "bank-a.pub"), "--coordinator-key", coord,
    )  # fmt: skip
    assert code == 0, out
    assert len(store.load_store(trust_file).active_keys("bank-a")) == 1
    # Only the coordinator can change the store.
    code, out = _cli(
        "trust", "revoke", "--trust", str(trust_file), "--institution", "cf-b",
        "--coordinator-key", str(federation / "cf-b" / "cf-b.key"),
    )  # fmt: skip
    assert code == 2 and "not this federation's coordinator key" in out


@pytest.fixture
def artifact(federation: Path) -> Path:
    """A small signed model artifact made with the federation's coordinator key."""
    import pandas as pd

    rng = np.random.default_rng(0)
    x = pd.DataFrame({"income": rng.normal(size=200), "sector": rng.choice(["a", "b"], 200)})
    y = (rng.random(200) < 0.3).astype(int)
    schema = Schema.model_validate(
        {"label": "y", "positive": 1, "features": {"income": "numeric", "sector": "categorical"}}
    )
    spec = agree(
        [summarize(x, y, schema, max_categories=8, min_count=1)],
        schema,
        max_categories=8,
        min_count=1,
    )
    arch = architecture("logreg", spec.n_outputs)
    out = federation / "run" / "model"
    save_artifact(
        out,
        stage="final",
        state={
            "linear.weight": rng.normal(size=(1, spec.n_outputs)).astype(np.float32),
            "linear.bias": np.zeros(1, np.float32),
        },
        spec=spec,
        architecture=arch,
        schema=schema,
        institutions=["bank-a", "cf-b"],
        training={"rounds": 1},
        metrics={"auc": 0.7},
        created_at="2026-11-30T00:00:00+00:00",
        signer=keys.load_private_key(federation / "coord" / "coordinator.key"),
        trust=store.load_store(federation / "trust.json"),
        provenance={"round": 1, "updates": [{"round": 1, "accepted": {"bank-a": "ab"}}]},
    )
    return out


def test_verify_accepts_the_signed_artifact(artifact: Path, federation: Path) -> None:
    code, out = _cli("verify", str(artifact), "--trust", str(federation / "trust.json"))
    assert code == 0 and "OK" in out and "1 signed updates accepted" in out


@pytest.mark.parametrize(
    ("damage", "names"),
    [
        ("weights", "weights.npz: SHA-256"),
        ("preprocessing", "preprocessing.json: SHA-256"),
        ("card", "model.json: SHA-256"),
        ("manifest", "manifest.sig: the coordinator's signature"),
        ("signature", "manifest.sig: the coordinator's signature"),
        ("unsigned", "manifest.sig: missing"),
        ("other-coordinator", "not by the coordinator key"),
    ],
)
def test_verify_names_what_failed(
    artifact: Path, federation: Path, tmp_path: Path, damage: str, names: str
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(artifact, copy)
    trust_file = federation / "trust.json"

    def flip(name: str, offset: int = -10) -> None:
        data = bytearray((copy / name).read_bytes())
        data[offset] ^= 0x01
        (copy / name).write_bytes(bytes(data))

    if damage == "weights":
        flip("weights.npz", -100)
    elif damage == "preprocessing":
        flip("preprocessing.json")
    elif damage == "card":
        flip("model.json")
    elif damage == "manifest":
        manifest = json.loads((copy / MANIFEST).read_text())
        manifest["metrics"]["auc"] = 0.99  # a better-looking model, same files
        (copy / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    elif damage == "signature":
        sig = json.loads((copy / SIGNATURE).read_text())
        raw = bytearray(base64.b64decode(sig["signature"]))
        raw[0] ^= 0x01
        sig["signature"] = base64.b64encode(bytes(raw)).decode()
        (copy / SIGNATURE).write_text(json.dumps(sig))
    elif damage == "unsigned":
        (copy / SIGNATURE).unlink()
    else:  # the same artifact checked against another federation's trust store
        other = tmp_path / "other"
        keys.write_private_key(other / "c.key", keys.generate())
        store.save_store(
            other / "trust.json", store.create("other", keys.load_private_key(other / "c.key"))
        )
        trust_file = other / "trust.json"
    # Unpinned, so the signature check itself is what fails (pins: tests/attacks).
    code, out = _cli("verify", str(copy), "--trust", str(trust_file), "--trust-any-coordinator")
    assert code == 1 and "FAILED" in out
    assert names in out
    with pytest.raises(ArtifactError):
        load_artifact(copy, store.load_store(trust_file))  # no unverified load path


def test_env_passphrase_must_exist(tmp_path: Path) -> None:
    os.environ.pop("JC_MISSING", None)
    code, out = _cli(
        "keys", "new", "--institution", "x", "--out", str(tmp_path), "--passphrase-env",
        "JC_MISSING",
    )  # fmt: skip
    assert code == 2 and "JC_MISSING" in out and not (tmp_path / "x.key").exists()


def test_verify_prints_a_failure_as_written_not_as_markup(
    artifact: Path, federation: Path, tmp_path: Path
) -> None:
    """A bracketed name in the error (here the model's own directory) is shown, not taken as
    rich markup and dropped."""
    copy = tmp_path / "model[bold]x"
    shutil.copytree(artifact, copy)
    (copy / SIGNATURE).unlink()
    code, out = _cli(
        "verify", str(copy), "--trust", str(federation / "trust.json"), "--trust-any-coordinator"
    )
    assert code == 1 and "FAILED" in out
    assert "model[bold]x" in out.replace("\n", "")
