"""`RunMetrics`, the schema of metrics.json: files written before it existed read back as they
were, its JSON schema describes them, and a key that is not in the schema is refused."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from jointcredit.cli.main import app as cli
from jointcredit.federation.metrics import RunMetrics, metrics_schema

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("metrics-*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_metrics_files_round_trip_and_follow_the_exported_schema(path: Path) -> None:
    written = json.loads(path.read_text())
    metrics = RunMetrics.read(path)
    assert metrics.as_json() == written  # nothing added, lost or renamed
    jsonschema.validate(written, metrics_schema())


def test_an_unknown_or_misspelt_key_is_refused() -> None:
    written = json.loads(FIXTURES[0].read_text())
    with pytest.raises(ValidationError, match="federatd"):
        RunMetrics.model_validate({**written, "federatd": {}})
    written["privacy"]["epsilon_spnt"] = 1.0
    with pytest.raises(ValidationError, match="epsilon_spnt"):
        RunMetrics.model_validate(written)


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    metrics = RunMetrics.read(FIXTURES[0])
    target = tmp_path / "metrics.json"
    target.write_text("previous run")
    metrics.write(target)
    assert json.loads(target.read_text()) == json.loads(FIXTURES[0].read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_the_cli_exports_the_schema() -> None:
    result = CliRunner().invoke(cli, ["schema", "metrics"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema == metrics_schema()
    assert {"federated", "per_institution", "rounds", "security", "privacy"} <= set(
        schema["required"]
    )
    settings = json.loads(CliRunner().invoke(cli, ["schema", "settings"]).output)
    assert "learning-rate" in settings["properties"]


def test_infinity_and_nan_survive_a_write_and_a_read(tmp_path: Path) -> None:
    written = json.loads(FIXTURES[0].read_text())
    written["config"]["epsilon"] = float("inf")  # dp-record clipping without noise
    metrics = RunMetrics.model_validate(written)
    metrics.write(tmp_path / "metrics.json")
    back = RunMetrics.read(tmp_path / "metrics.json")
    assert back.config["epsilon"] == float("inf")
    assert "Infinity" in (tmp_path / "metrics.json").read_text()


def test_a_failed_write_keeps_the_previous_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("previous run")

    def crash(self: Path, other: Path) -> Path:
        raise OSError("disk gone")

    monkeypatch.setattr(Path, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        RunMetrics.read(FIXTURES[0]).write(target)
    assert target.read_text() == "previous run"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
