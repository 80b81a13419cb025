"""The schema keys `time`, `special` and `monotone`: what they accept, what they refuse (by
pydantic, and through the CLI with exit 2 naming the key), and that they round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SCHEMA_TOML, make_institution
from typer.testing import CliRunner

from jointcredit.cli.main import app as cli
from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.data.errors import DataValidationError
from jointcredit.data.schema import load_schema, parse_schema

runner = CliRunner()

GOOD = """\
label = "defaulted"
positive = 1
id = "applicant_id"
time = "applied"

[features]
age = { type = "numeric", monotone = "decreasing" }
income = { type = "numeric", missing = "impute" }
sector = "categorical"
delinquencies = { type = "numeric", min = 0, max = 95, special = [96, 98], monotone = "increasing" }
"""


def _with(feature_line: str = "", top: str = "") -> str:
    """SCHEMA_TOML with one more top-level key and/or one more feature."""
    head, features = SCHEMA_TOML.split("[features]\n")
    return f"{head.rstrip()}\n{top}\n[features]\n{features}{feature_line}\n"


# Each bad schema, and the key its refusal must name.
BAD: list[tuple[str, str]] = [
    (_with('kind = { type = "categorical", special = [96] }'), "special"),
    (_with('kind = { type = "categorical", monotone = "increasing" }'), "monotone"),
    (_with('dq = { type = "numeric", monotone = "up" }'), "monotone"),
    (_with('dq = { type = "numeric", min = 0, special = [96] }'), "special"),
    (_with('dq = { type = "numeric", min = 0, max = 99, special = [96, 98] }'), "special"),
    (_with('dq = { type = "numeric", special = [96] }'), "special"),
    (_with('dq = { type = "numeric", max = 95, special = [96, 96] }'), "special"),
    (_with(top='time = "age"'), "time"),
    (_with(top='time = "defaulted"'), "time"),
    (_with(top='time = "applicant_id"'), "time"),
]


@pytest.mark.parametrize(("toml", "key"), BAD)
def test_a_contradictory_or_unknown_key_is_refused_naming_it(
    tmp_path: Path, toml: str, key: str
) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(toml)
    with pytest.raises(DataValidationError, match=key) as info:
        load_schema(path)
    assert str(path) in str(info.value)


def _directory(tmp_path: Path, schema: str, *, with_time: bool = True) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "schema.toml").write_text(schema)
    for k, name in enumerate(("bank-a", "bank-b")):
        frame = make_institution(k + 1)
        rng = np.random.default_rng(k)
        frame["delinquencies"] = rng.poisson(0.5, len(frame)).astype(float)
        frame.loc[rng.random(len(frame)) < 0.1, "delinquencies"] = 96.0
        frame.loc[rng.random(len(frame)) < 0.05, "delinquencies"] = 98.0
        frame["income"] = frame["income"].fillna(1000.0)
        if with_time:
            days = pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(len(frame)), "D")
            frame["applied"] = days.strftime("%Y-%m-%d")
        frame.to_csv(d / f"{name}.csv", index=False)
    return d


@pytest.mark.parametrize(("toml", "key"), BAD)
def test_simulate_refuses_a_bad_schema_with_exit_2_naming_the_key(
    tmp_path: Path, toml: str, key: str
) -> None:
    d = _directory(tmp_path, toml)
    result = runner.invoke(cli, ["simulate", "--dataset", str(d), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert key in result.output and "schema.toml" in result.output
    assert not (tmp_path / "o").exists()


def test_a_time_column_missing_from_a_file_is_refused_naming_the_key(tmp_path: Path) -> None:
    d = _directory(tmp_path, GOOD, with_time=False)
    for args in (["data", "check", str(d)], ["simulate", "--dataset", str(d), "--out", "o"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "time = 'applied'" in result.output and "bank-a.csv" in result.output


def test_a_time_column_that_is_no_time_is_refused(tmp_path: Path) -> None:
    d = _directory(tmp_path, GOOD)
    frame = pd.read_csv(d / "bank-b.csv", dtype=str)
    frame.loc[7, "applied"] = "soon"
    frame.to_csv(d / "bank-b.csv", index=False)
    with pytest.raises(DataValidationError, match=r"'soon'.*line\(s\) 9") as info:
        load_federation(DataConfig(dataset=str(d)))
    assert info.value.column == "applied"


def test_the_good_schema_loads_and_round_trips(tmp_path: Path) -> None:
    d = _directory(tmp_path, GOOD)
    schema = load_schema(d / "schema.toml")
    assert schema.time == "applied"
    assert schema.features["delinquencies"].special == (96.0, 98.0)
    assert schema.features["delinquencies"].monotone == "increasing"
    assert schema.features["age"].monotone == "decreasing"
    assert parse_schema(schema.model_dump()) == schema
    (tmp_path / "again.toml").write_text(schema.to_toml())
    assert load_schema(tmp_path / "again.toml") == schema
    # Special codes lie outside min/max: they pass the range check, other values do not.
    fed = load_federation(DataConfig(dataset=str(d)))
    dq = pd.concat([i.train.x["delinquencies"] for i in fed.institutions.values()])
    assert {96.0, 98.0} <= set(dq) and "applied" not in fed.schema.features
    frame = pd.read_csv(d / "bank-a.csv")
    frame.loc[3, "delinquencies"] = 97.0
    frame.to_csv(d / "bank-a.csv", index=False)
    with pytest.raises(DataValidationError, match=r"97\.0 above the schema's max 95"):
        load_federation(DataConfig(dataset=str(d)))
