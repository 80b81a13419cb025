"""Attacks on the CLI's inputs (issue 19, item 17): a FIFO or a directory in a signed file's
place, a malformed institution id, an adversary naming no institution of the run. Each is a
clear error and an exit code, never a hang or a traceback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from service_helpers import signed_artifact
from typer.testing import CliRunner

from jointcredit.cli.main import app


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    signed_artifact(root)
    return root


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_fifo_or_directory_in_a_signed_files_place_is_refused(
    model: Path, tmp_path: Path, kind: str
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model / "model", copy)
    (copy / "weights.npz").unlink()
    if kind == "fifo":
        os.mkfifo(copy / "weights.npz")  # reading it would block forever
    else:
        (copy / "weights.npz").mkdir()
    code, out = _run("verify", str(copy), "--trust", str(model / "trust.json"))
    assert code == 1 and "weights.npz: not a regular file" in out


def test_a_malformed_institution_id_is_a_clear_error(tmp_path: Path) -> None:
    code, out = _run("exposure", "keygen", "--institution", "bad id!", "--out", str(tmp_path),
                     "--url", "https://bank.example")  # fmt: skip
    assert code == 2 and "--institution" in out and "bad id!" in out


def test_an_adversary_naming_no_institution_of_the_run_is_refused(tmp_path: Path) -> None:
    code, out = _run("simulate", "--institutions", "3", "--rounds", "1", "--adversary",
                     "no-such-bank:tamper-array", "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and "no-such-bank" in out and "not institutions of this run" in out
    assert not (tmp_path / "out").exists()
