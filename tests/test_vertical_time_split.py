"""Out-of-time validation of a vertical run (`--split time`): the test rows are the latest
aligned rows by the label party's time column, every training row strictly earlier; the
label party and the simulation's baselines pick the same rows; a dataset without a time
column is refused with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner
from vertical_helpers import deployed_node_config, hello_request

from jointcredit.cli.main import app
from jointcredit.client import vertical_app
from jointcredit.client.vertical_label import LabelSession, held_out_rows, split_rows
from jointcredit.data import synthetic_vertical as sv
from jointcredit.data.vertical_datasets import load_vertical_dataset
from jointcredit.data.vertical_schema import VerticalSchema
from jointcredit.federation import protocol
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.vertical.scorecard.artifact import load_label_part
from jointcredit.trust.keyset import create_key_set
from jointcredit.trust.store import load_store

TIME = "applied"


def _settings(**kw: object) -> VerticalSettings:
    return VerticalSettings.model_validate({"test-fraction": 0.25, "seed": 3, **kw})


def test_the_latest_aligned_rows_are_the_test_rows_whatever_their_order() -> None:
    data = load_vertical_dataset("sba-vertical", seed=1)
    bank = data.parties["bank"].frame
    years = bank["approval_year"].to_numpy()
    aligned = np.random.default_rng(0).permutation(len(bank))[:5000]
    test = held_out_rows(bank, data.schema, _settings(split="time"), aligned)
    assert years[aligned][~test].max() < years[aligned][test].min()
    assert abs(test.mean() - 0.25) < 0.1  # a year holds many loans: whole years per side
    # The same rows in another order: the same rows chosen.
    again = aligned[::-1]
    assert set(again[held_out_rows(bank, data.schema, _settings(split="time"), again)]) == set(
        aligned[test]
    )
    # `random` is the seeded per-row draw it always was.
    drawn = held_out_rows(bank, data.schema, _settings(), aligned)
    assert np.array_equal(drawn, split_rows(len(bank), 3, 0.25)[aligned])


def test_a_schema_without_time_cannot_split_by_time() -> None:
    data = load_vertical_dataset("synthetic-vertical", rows=300, seed=1)
    bank = data.parties["bank"].frame
    with pytest.raises(ProtocolError, match="time column"):
        held_out_rows(bank, data.schema, _settings(split="time"), np.arange(len(bank)))
    result = CliRunner().invoke(app, [
        "simulate", "--layout", "vertical", "--dataset", "synthetic-vertical",
        "--synthetic-rows", "300", "--split", "time", "--out", "never",
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "time column" in " ".join(result.output.split()) and not Path("never").exists()


def _directory(root: Path) -> Path:
    """A bank (with an application year) and a platform, each holding applicants the other
    lacks."""
    frames = sv.generate(700, seed=4)
    base = sv.vertical_schema()
    schema = VerticalSchema(base=base.base.model_copy(update={"time": TIME}), parties=base.parties)
    bank = frames["bank"].iloc[:650].copy()
    bank[TIME] = np.random.default_rng(4).integers(2015, 2021, size=len(bank))
    for party, frame in (("bank", bank), ("platform", frames["platform"].iloc[50:])):
        (root / party).mkdir(parents=True)
        pd.DataFrame(frame).to_csv(root / party / f"{party}.csv", index=False)
    (root / "schema.toml").write_text(schema.to_toml(), encoding="utf-8")
    return root


@pytest.mark.integration
def test_a_vertical_scorecard_run_tests_on_the_latest_applicants(tmp_path: Path) -> None:
    data_dir = _directory(tmp_path / "data")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "simulate", "--layout", "vertical", "--model", "scorecard", "--dataset", str(data_dir),
        "--max-bins", "8", "--min-category-count", "10", "--split", "time",
        "--test-fraction", "0.25", "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "out of time: tested on the latest" in " ".join(result.output.split())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["split"] == "time"
    for k in ("auc", "ks", "brier"):
        assert metrics["federated"][k] == pytest.approx(metrics["centralized"][k], abs=1e-9)
    # The label party's test rows are exactly the aligned rows of the latest years.
    data = load_vertical_dataset(str(data_dir))
    bank, platform = data.parties["bank"].frame, data.parties["platform"].frame
    aligned = bank[bank[data.schema.id].isin(set(platform[data.schema.id]))]
    years = aligned[TIME].to_numpy()
    label = load_label_part(out / "model", load_store(out / "trust.json"))
    tested = int(label.card.training["test-rows"])
    cut = np.sort(years)[::-1][tested - 1]  # the earliest test year
    assert int((years >= cut).sum()) == tested and (years < cut).sum() > 0


def test_a_platform_answers_for_at_most_60_percent_of_the_aligned_rows_as_test_rows() -> None:
    """A label party marking most shared applicants as test rows would get their codes (or
    sides) one by one: the platform refuses the alignment, whatever the run's fraction."""
    from test_vertical_relay import _psi, _relay, _request
    from test_vertical_scorecard_relay import _parties

    label, feature, keys_ = _parties("scorecard")
    _, arrays = _psi(label, feature, keys_)
    train = arrays[v.TRAIN_ROWS].copy()
    train[: int(len(train) * 0.7)] = False
    forged = {**arrays, v.TRAIN_ROWS: train}
    with pytest.raises(ProtocolError, match="marked as test rows"):
        feature.handle(_relay(_request(3, v.PSI_ALIGN, forged, keys_["bank"], index=1), 3), v.PSI)


def test_a_deployed_bank_takes_a_time_split_only_when_its_node_config_allows(
    tmp_path: Path,
) -> None:
    """Test membership under `split = time` is the bank's time column cut at a threshold, and
    every platform learns it of its shared customers: the coordinator may ask for it, a
    deployed bank runs it only with `allow-time-split = true` in its own node config."""
    data = _directory(tmp_path / "data")
    kit = tmp_path / "kit"
    create_key_set(kit, ["bank", "platform"], federation="time-split")
    node = deployed_node_config(kit, "bank", data / "bank" / "bank.csv", data / "schema.toml")
    run = {"layout": "vertical", "parties": 2, "model": "scorecard", "split": "time"}

    def hello(node: dict[str, object]) -> vertical_app.Request:
        return hello_request(7, 9, run, node)

    with pytest.raises(ValueError, match="allow-time-split = true"):
        vertical_app.handle(hello(node))
    vertical_app.handle(hello({**node, protocol.ALLOW_TIME_SPLIT: True}))
    try:
        (key,) = vertical_app.sessions()
        assert isinstance(vertical_app._SESSIONS[key], LabelSession)
    finally:
        vertical_app.drop((7, 9))
    assert VerticalSettings.model_validate({"test-fraction": 0.5}).test_fraction == 0.5
    with pytest.raises(ValueError, match="test-fraction"):
        VerticalSettings.model_validate({"test-fraction": 0.6})
