"""The shipped vertical datasets (data/sba_vertical.py, data/synthetic_vertical.py): partial
overlap, opaque identifiers, label only at the bank, deterministic per seed, and platform
columns that carry signal the bank lacks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.data import sba_vertical, synthetic_vertical
from jointcredit.data.vertical_datasets import (
    load_vertical_dataset,
    vertical_frames,
    write_vertical_directory,
)


def test_sba_vertical_partial_overlap_and_columns() -> None:
    data = load_vertical_dataset("sba-vertical")
    bank, platform = data.parties["bank"], data.parties["platform"]
    assert (len(bank), len(platform)) == (45_000, 46_000)
    assert len(set(bank.ids) & set(platform.ids)) == 36_000
    assert all(re.fullmatch(r"\d{2}-\d{7}", i) for i in bank.ids[:500])
    assert list(platform.frame.columns) == ["ein", *sba_vertical.PLATFORM_FEATURES]
    # The approval year is the bank's time column (out-of-time splits), never a feature.
    assert list(bank.frame.columns[-2:]) == ["charged_off", "approval_year"]
    assert data.schema.base.time == "approval_year"
    assert "approval_year" not in data.schema.party_features("bank")
    # the bank's rows are real loans: its default rate is the sample's (21.2 %), not skewed
    assert abs(bank.frame["charged_off"].mean() - 0.212) < 0.01


def test_the_shared_rows_are_the_same_businesses() -> None:
    """A shared identifier joins the bank's loan terms and the platform's attributes of the
    same shipped loan, and the universe's row order is in neither party's."""
    _, frames = vertical_frames("sba-vertical")
    joined = frames["bank"].merge(frames["platform"], on="ein")
    universe = sba_vertical.universe()
    key = [*sba_vertical.BANK_FEATURES, *sba_vertical.PLATFORM_FEATURES, "charged_off"]
    universe_rows = set(map(tuple, universe[key].astype(str).to_numpy()))
    assert all(tuple(r) in universe_rows for r in joined[key].astype(str).to_numpy()[:300])


def test_named_datasets_are_deterministic_per_seed() -> None:
    _, a = vertical_frames("synthetic-vertical", rows=500, seed=3)
    _, b = vertical_frames("synthetic-vertical", rows=500, seed=3)
    _, c = vertical_frames("synthetic-vertical", rows=500, seed=4)
    pd.testing.assert_frame_equal(a["platform"], b["platform"])
    assert not a["bank"]["phone"].equals(c["bank"]["phone"])


def test_synthetic_vertical_shape_and_ids() -> None:
    data = load_vertical_dataset("synthetic-vertical", rows=2_000)
    bank, platform = data.parties["bank"], data.parties["platform"]
    assert len(data.schema.parties["bank"].features) == 13
    assert len(data.schema.parties["platform"].features) == 10
    assert (len(bank), len(platform)) == (2_400, 3_000)
    assert len(set(bank.ids) & set(platform.ids)) == 2_000
    assert len(set(bank.ids)) == len(bank)
    assert all(re.fullmatch(r"\+86 1[3-9]\d \d{4} \d{4}", i) for i in platform.ids[:500])


def _numeric(frame: pd.DataFrame) -> np.ndarray:
    x = pd.get_dummies(frame, dtype=float).to_numpy(dtype=float)
    out: np.ndarray = (x - x.mean(0)) / (x.std(0) + 1e-9)
    return out


def test_the_platform_columns_buy_the_bank_accuracy() -> None:
    """On the joined rows, the bank's and the platform's columns together beat the bank's
    alone by a clear margin, and stay below the ground truth's own AUC."""
    _, frames = vertical_frames("synthetic-vertical", rows=12_000, seed=1)
    joined = frames["bank"].merge(frames["platform"], on="phone")
    y = joined["defaulted"].to_numpy()
    bank_x = _numeric(joined[list(synthetic_vertical.BANK_FEATURES)])
    all_x = _numeric(
        joined[[*synthetic_vertical.BANK_FEATURES, *synthetic_vertical.PLATFORM_FEATURES]]
    )
    half = len(y) // 2
    auc = {}
    for name, x in (("bank", bank_x), ("joined", all_x)):
        model = LogisticRegression(max_iter=500).fit(x[:half], y[:half])
        auc[name] = roc_auc_score(y[half:], model.predict_proba(x[half:])[:, 1])
    bank_rows = joined[["phone", *synthetic_vertical.BANK_FEATURES]]
    truth = synthetic_vertical.true_default_probability(bank_rows, joined)
    assert auc["joined"] - auc["bank"] > 0.04, auc
    assert auc["joined"] < roc_auc_score(y[half:], truth[half:]) + 0.01


def test_written_layout_passes_data_check(tmp_path: Path) -> None:
    out = write_vertical_directory("sba-vertical", tmp_path / "sba")
    result = CliRunner().invoke(app, ["data", "check", "--layout", "vertical", str(out), "--json"])
    assert result.exit_code == 0, result.stdout
    facts = json.loads(result.stdout)
    assert facts["shared_ids"] == 36_000 and facts["parties"]["platform"]["rows"] == 46_000
