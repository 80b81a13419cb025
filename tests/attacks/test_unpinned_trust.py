"""Attack: unpinned trust (issue 19, item 4). Re-signing changed weights with a new key and
putting a matching new trust.json beside them was accepted by `verify`, `serve` and `score`
(PD 0.647 -> 0.032: decline became approve); `score` and `decide` could not pin at all. The
coordinator key recorded when the federation was created (trust/pins.py) is now the default
pin of every tool; trusting whatever trust.json says is an explicit, loudly named opt-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from forge import forge
from service_helpers import signed_artifact
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.trust.pins import pinned_key


@pytest.fixture(scope="module")
def forged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A run directory whose model was re-signed, with changed weights, by a forger's key and
    a forged trust.json under the genuine federation's name. Returns it and the forger's key
    id."""
    root = tmp_path_factory.mktemp("forged")
    signed_artifact(root)
    federation = json.loads((root / "trust.json").read_bytes())["federation"]
    assert pinned_key(federation) is not None  # recorded when the federation was created
    out = root / "out"
    return out, forge(root / "model", federation, out)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "command",
    [
        ["verify", "{model}", "--trust", "{trust}"],
        ["score", "{model}", "--sample", "2"],
        ["decide", "{model}", "--sample", "2"],
        ["serve", "--model", "{model}", "--trust", "{trust}"],
    ],
)
def test_a_re_signed_model_with_a_matching_trust_store_is_refused(
    forged: tuple[Path, str], command: list[str]
) -> None:
    out, _ = forged
    args = [a.format(model=out / "model", trust=out / "trust.json") for a in command]
    code, output = _run(*args)
    assert code in (1, 2) and "is not the pinned key" in output, output


def test_the_forgery_passes_only_when_the_caller_says_so(forged: tuple[Path, str]) -> None:
    out, forger = forged
    model = str(out / "model")
    code, output = _run("score", model, "--sample", "2", "--coordinator-key-id", forger)
    assert code == 0, output  # the caller pinned this very key
    code, output = _run("score", model, "--sample", "2", "--trust-any-coordinator")
    assert code == 0 and "WARNING" in output and "--trust-any-coordinator" in output


def test_a_federation_nobody_pinned_is_refused_with_how_to_pin(
    forged: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = forged
    trust = json.loads((out / "trust.json").read_bytes())
    trust["federation"] = "never-created-here"
    (tmp_path / "trust.json").write_text(json.dumps(trust))
    code, output = _run("verify", str(out / "model"), "--trust", str(tmp_path / "trust.json"))
    assert code == 2 and "no pinned coordinator key" in output
    assert "--coordinator-key-id" in output and "--trust-any-coordinator" in output
