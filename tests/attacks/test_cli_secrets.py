"""Attack: secrets in the CLI's failure output (issue 19, items 14 and 17). Every expected
failure is one line and an exit code: no traceback, no local variables (Typer's pretty
exceptions printed them: the new API token, the database password), no rich markup eating
bracketed text. Run as real processes: the traceback printer is what is under test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import signed_artifact

from jointcredit.service.auth import new_key

pytestmark = pytest.mark.e2e

SECRET = "PlantedPassw0rd"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jointcredit.cli", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _one_clean_line(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert "Traceback" not in out and SECRET not in out and "jck_" not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    return lines[0]


@pytest.mark.parametrize(
    ("db", "needle"),
    [
        (f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db", "u:***@127.0.0.1:1"),
        (f"mysql://u:{SECRET}@127.0.0.1/db", "jointcredit[postgres]"),  # markup kept
        ("decisions.sqlite", "is not a database URL"),  # a path where a URL belongs
        ("sqlite:////etc/hostname", "file is not a database"),
        ("sqlite:////nonexistent/x.sqlite", "no audit log"),
    ],
)
def test_audit_verify_failures_are_one_line_without_secrets(db: str, needle: str) -> None:
    assert needle in _one_clean_line(_cli("audit", "verify", "--db", db))


def test_apikey_new_into_an_unwritable_place_prints_no_token(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    line = _one_clean_line(_cli("apikey", "new", "--institution", "bank-a",
                                "--keys", str(tmp_path / "a-file" / "keys.json")))  # fmt: skip
    assert "a-file" in line


def test_serve_with_an_unreachable_database_hides_its_password(tmp_path: Path) -> None:
    model = signed_artifact(tmp_path)
    new_key(tmp_path / "keys.json", "bank-a")
    db = f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db"
    line = _one_clean_line(_cli("serve", "--model", str(model), "--trust",
                                str(tmp_path / "trust.json"), "--db", db,
                                "--api-keys", str(tmp_path / "keys.json")))  # fmt: skip
    assert "refusing to start" in line and "u:***@127.0.0.1:1" in line
