"""Attack: the training reference edited to hide drift. `reference.json` is what stability
monitoring compares served applicants with; an operator (or anyone who can write the model
directory) who made it look like today's applicants would silence every alarm. It is a file
of the signed artifact like the weights: an edited, replaced or deleted reference refuses to
load, and the service refuses to start."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from service_helpers import signed_artifact

from jointcredit.models.artifact import ArtifactError, load_artifact
from jointcredit.models.reference import REFERENCE
from jointcredit.service.auth import new_key
from jointcredit.service.loader import StartupError, load_service
from jointcredit.trust.store import load_store


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    signed_artifact(root, reference=True)
    new_key(root / "keys.json", "bank-a")
    return root


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _flatten(path: Path) -> None:
    """A well-formed reference whose score counts match any window: all in one band."""
    reference = json.loads(path.read_text())
    counts = reference["score_counts"]
    reference["score_counts"] = [sum(counts)] + [0] * (len(counts) - 1)
    path.write_text(json.dumps(reference))


def test_the_untouched_reference_loads(signed: Path) -> None:
    model = load_artifact(signed / "model", load_store(signed / "trust.json"))
    assert model.reference is not None and model.reference.rows > 0


@pytest.mark.parametrize(
    "attack", [_flip, _flatten, lambda p: p.unlink()], ids=["flipped", "replaced", "deleted"]
)
def test_a_tampered_reference_refuses_to_load(
    signed: Path, tmp_path: Path, attack: Callable[[Path], None]
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(signed, copy)
    attack(copy / "model" / REFERENCE)
    with pytest.raises(ArtifactError, match=REFERENCE):
        load_artifact(copy / "model", load_store(copy / "trust.json"))
    with pytest.raises(StartupError, match="does not verify"):
        load_service(copy / "model", copy / "trust.json", api_keys=copy / "keys.json",
                     db_url=f"sqlite:///{tmp_path / 'audit.sqlite'}")  # fmt: skip
