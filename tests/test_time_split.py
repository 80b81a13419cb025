"""`split = time`: each institution trains on its earlier rows and tests on its latest ones, by
the schema's time column; refused before anything starts when the schema has none. And the
SBA approval year: the time column, a feature only under the opt-in `hindsight-vintage`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SCHEMA_TOML, make_institution
from typer.testing import CliRunner

from jointcredit.cli.main import app as cli
from jointcredit.data import sba
from jointcredit.data.catalog import DataConfig, load_federation, load_institution
from jointcredit.data.errors import DataValidationError
from jointcredit.data.frames import time_split
from jointcredit.federation.settings import RunSettings, SettingsError, settings_for_dataset

runner = CliRunner()


def _assert_out_of_time(config: DataConfig) -> None:
    fed = load_federation(config)
    pooled = fed.pooled_test()
    assert pooled.time is not None and len(pooled.time) == len(pooled.y)
    for inst, data in fed.institutions.items():
        assert data.train.time is not None and data.test.time is not None
        assert data.train.time.max() < data.test.time.min(), inst
        assert 0.05 < len(data.test) / (len(data.train) + len(data.test)) < 0.5, inst


def test_every_sba_lender_trains_on_earlier_loans_than_it_tests_on() -> None:
    config = DataConfig(dataset="sba", split="time")
    _assert_out_of_time(config)
    fed = load_federation(config)
    rows = {inst: len(d.train) + len(d.test) for inst, d in fed.institutions.items()}
    assert set(rows.values()) == {3000}  # every row on one side or the other
    # The random split mixes years on both sides: the time split is a different split.
    mixed = load_federation(DataConfig(dataset="sba")).institutions[fed.ids[0]]
    assert mixed.train.time is not None and mixed.test.time is not None
    assert mixed.train.time.max() > mixed.test.time.min()


def test_synthetic_institutions_split_by_application_month() -> None:
    _assert_out_of_time(DataConfig(dataset="synthetic", institutions=4, split="time"))


def test_a_date_column_splits_by_date(tmp_path: Path) -> None:
    head, features = SCHEMA_TOML.split("[features]\n")
    (tmp_path / "schema.toml").write_text(f'{head}time = "applied"\n[features]\n{features}')
    for k, name in enumerate(("bank-a", "bank-b")):
        frame = make_institution(k + 1)
        days = pd.Timestamp("2021-03-01") + pd.to_timedelta(np.arange(len(frame)) % 90, "D")
        frame["applied"] = np.random.default_rng(k).permutation(days.strftime("%Y-%m-%d"))
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    _assert_out_of_time(DataConfig(dataset=str(tmp_path), split="time"))


def test_rows_tied_at_the_boundary_go_to_one_side_the_documented_way() -> None:
    years = np.array([2001.0] * 50 + [2002.0] * 30 + [2003.0] * 20)
    order = np.random.default_rng(0).permutation(100)
    train, test = time_split(years[order], 0.2, "x")
    assert set(years[order][test]) == {2003.0} and len(test) == 20
    assert list(train) == sorted(train) and list(test) == sorted(test)  # file order kept
    # The 2002 loans start the latest 20 %; 40 % (all of 2002-2003) is further from 20 % than
    # 20 % (2003 alone) is, so 2002 stays in training...
    _, test = time_split(np.array([2001.0] * 60 + [2002.0] * 25 + [2003.0] * 15), 0.2, "x")
    assert len(test) == 15
    # ...unless taking it is closer: 35 % is nearer to 30 % than 10 % is.
    _, test = time_split(np.array([2001.0] * 65 + [2002.0] * 25 + [2003.0] * 10), 0.3, "x")
    assert len(test) == 35
    # Equally far on both sides: the boundary period is tested on.
    _, test = time_split(np.array([2001.0] * 70 + [2002.0] * 20 + [2003.0] * 10), 0.2, "x")
    assert len(test) == 30
    assert len(time_split(np.array([1.0] * 7 + [2.0] * 2 + [3.0]), 0.2, "x")[1]) == 3
    with pytest.raises(DataValidationError, match="same time"):
        time_split(np.full(10, 2005.0), 0.2, "x")


def test_central_evaluation_and_baselines_see_the_same_split() -> None:
    """The ServerApp's central evaluation reads each institution through `load_institution`
    and the baselines through `load_federation`, both from the run's data config."""
    settings = RunSettings.from_run_config({"split": "time", "institutions": 3})
    fed = load_federation(settings.data)
    for inst, data in fed.institutions.items():
        alone = load_institution(settings.data, inst)
        pd.testing.assert_frame_equal(alone.test.x, data.test.x)
        np.testing.assert_array_equal(alone.train.y, data.train.y)


def _no_time_directory(tmp_path: Path) -> Path:
    (tmp_path / "schema.toml").write_text(SCHEMA_TOML)
    for k, name in enumerate(("bank-a", "bank-b")):
        make_institution(k + 1).to_csv(tmp_path / f"{name}.csv", index=False)
    return tmp_path


def test_split_time_without_a_time_column_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _no_time_directory(tmp_path)
    settings = RunSettings.from_run_config({"dataset": str(d), "split": "time"})
    with pytest.raises(SettingsError, match=r"split = time needs the schema's time column"):
        settings_for_dataset(settings)
    with pytest.raises(DataValidationError, match="time"):  # what a node would hit
        load_federation(settings.data)
    started: list[object] = []
    monkeypatch.setattr("jointcredit.simulations.simulate.simulate", started.append)
    for command in (["simulate", "--out", str(tmp_path / "o")], ["config", "resolve"]):
        result = runner.invoke(cli, [*command, "--dataset", str(d), "--split", "time"])
        assert result.exit_code == 2, result.output
        assert "split = time" in result.output and 'time = "column"' in result.output
    assert not started


def test_the_sba_approval_year_is_a_time_column_not_a_feature() -> None:
    fed = load_federation(DataConfig(dataset="sba", institutions=2))
    assert fed.schema.time == sba.TIME_COLUMN
    assert sba.TIME_COLUMN not in fed.schema.features and sba.VINTAGE not in fed.schema.features
    hindsight = load_federation(DataConfig(dataset="sba", institutions=2, hindsight_vintage=True))
    assert hindsight.schema.features[sba.VINTAGE].type == "categorical"
    assert "hindsight" in hindsight.description
    for inst, data in hindsight.institutions.items():
        years = data.train.x[sba.VINTAGE].astype(int).to_numpy()
        np.testing.assert_array_equal(years, data.train.time)
        pd.testing.assert_frame_equal(
            data.train.x.drop(columns=sba.VINTAGE), fed.institutions[inst].train.x
        )


def test_hindsight_vintage_is_an_sba_only_opt_in_labelled_as_hindsight() -> None:
    assert RunSettings().hindsight_vintage is False
    field = RunSettings.model_fields["hindsight_vintage"]
    assert field.description and "not known at decision time" in field.description
    for dataset in ("synthetic", "/some/dir"):
        with pytest.raises(SettingsError, match="hindsight-vintage"):
            RunSettings.from_run_config({"dataset": dataset, "hindsight-vintage": True})
    with pytest.raises(DataValidationError, match="hindsight-vintage"):
        load_federation(DataConfig(dataset="synthetic", hindsight_vintage=True))
