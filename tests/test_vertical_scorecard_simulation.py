"""`jointcredit simulate --layout vertical --model scorecard` end to end in a Flower
simulation: the trees' OUT contract (metrics.json's sections, each party's part signed by its
own key, `jointcredit verify` passing and failing on a changed byte), the federated scorecard
equal to its central equivalent on the joined rows, and what it does not take refused with
exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.client.vertical_label import own_bins
from jointcredit.client.vertical_scorecard import classing
from jointcredit.data import synthetic_vertical as sv
from jointcredit.data.vertical_schema import PartySpec, VerticalSchema
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.binning import OTHER, CategoricalBins, NumericBins
from jointcredit.models.vertical.merge_maps import coarse_codes
from jointcredit.models.vertical.scorecard.artifact import load_vertical_scorecard
from jointcredit.models.vertical.scorecard.central import central_scorecard
from jointcredit.simulations.vertical import aligned_frames, load_data
from jointcredit.trust.store import load_store

pytestmark = pytest.mark.integration

# Bins of at least 5 training rows each at ~500 applicants (neither party counts fewer).
OPTIONS = ["--max-bins", "8", "--min-category-count", "10", "--seed", "3"]


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, " ".join(result.output.split())


def _write(root: Path, schema: VerticalSchema, frames: dict[str, object]) -> Path:
    for party, frame in frames.items():
        (root / party).mkdir(parents=True)
        frame.to_csv(root / party / f"{party}.csv", index=False)  # type: ignore[attr-defined]
    (root / "schema.toml").write_text(schema.to_toml(), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bank and a platform in the bring-your-own layout, each holding applicants the other
    lacks."""
    frames = sv.generate(700, seed=4)
    return _write(
        tmp_path_factory.mktemp("vsc") / "data",
        sv.vertical_schema(),
        {"bank": frames["bank"].iloc[:650], "platform": frames["platform"].iloc[50:]},
    )


@pytest.fixture(scope="module")
def out(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vsc-out") / "out"
    code, output = _cli(
        "simulate", "--layout", "vertical", "--model", "scorecard", "--dataset", str(data_dir),
        "--schema", str(data_dir / "schema.toml"), *OPTIONS, "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    assert "federated" in output and "every reply verified" in output
    return out


def test_the_out_contract(out: Path, data_dir: Path) -> None:
    ids = [set(pd.read_csv(data_dir / p / f"{p}.csv")["phone"]) for p in ("bank", "platform")]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"layout", "dataset", "federated", "centralized", "label_party_only", "vertical",
            "config"} <= set(metrics)  # fmt: skip
    vert = metrics["vertical"]
    assert vert["parties"] == ["bank", "platform"]
    assert vert["intersection_size"] == len(ids[0] & ids[1])
    for k in ("psi_seconds", "training_seconds", "bytes_sent", "messages", "verified_replies"):
        assert vert[k] > 0, k
    assert metrics["config"]["model"] == "scorecard" and "trees" not in metrics["config"]
    fed, cen, own = metrics["federated"], metrics["centralized"], metrics["label_party_only"]
    for k in ("auc", "ks", "brier"):
        assert fed[k] == pytest.approx(cen[k], abs=1e-9), k
    # The platform's features add to the bank's own (synthetic-vertical is built so).
    assert 0.5 < own["auc"] < fed["auc"] <= 1.0
    assert (out / "trust.json").is_file()


def test_the_model_is_the_central_equivalent(out: Path, data_dir: Path) -> None:
    """The signed points and merge maps, applied to the aligned test rows, give the PDs of
    the central scorecard on the joined training rows (each party's own fine bins)."""
    settings = VerticalSettings.model_validate(
        {"dataset": str(data_dir), "schema": str(data_dir / "schema.toml"), "max-bins": 8,
         "min-category-count": 10, "seed": 3, "model": "scorecard"}
    )  # fmt: skip
    data = load_data(settings)
    frames, test = aligned_frames(data, settings)
    bank, platform = frames["bank"], frames["platform"]
    tr = ~test
    b_tr, p_tr = bank[tr].reset_index(drop=True), platform[tr].reset_index(drop=True)
    b_fine = own_bins(b_tr, data.schema, "bank", settings)
    p_fine = own_bins(p_tr, data.schema, "platform", settings)
    central = central_scorecard(
        (b_tr, b_fine), (p_tr, p_fine), b_tr[data.schema.base.label].to_numpy(),
        data.schema.base, classing=classing(settings),
    )  # fmt: skip
    model = load_vertical_scorecard(out / "model", load_store(out / "trust.json"))
    # Its edges are the platform's part's, its points the bank's: no edge in the bank's part.
    assert model.parties["platform"].bins == p_fine
    for kept, real in zip(model.model.platform, p_fine.features, strict=True):
        bins = kept.woe.bins  # stand-ins: fine codes, not the platform's edges or levels
        if isinstance(real, NumericBins):
            assert isinstance(bins, NumericBins)
            assert set(bins.edges) <= set(range(1, real.regular)), kept.name
        else:
            assert isinstance(bins, CategoricalBins)
            levels = {x for g in real.groups for x in g} - {OTHER}
            assert levels and not levels & {x for g in bins.groups for x in g}, kept.name
    assert model.card.holders == {"bank": b_fine.names, "platform": p_fine.names}
    federated = model.predict_pd({"bank": bank[test], "platform": platform[test]})
    # The platform answers coarse codes through the maps its part holds: the central fit's.
    maps = [p.merge for p in central.platform]
    for mine, theirs in zip(model.parties["platform"].merge, maps, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    coarse = coarse_codes(p_fine.codes(platform[test]).astype(np.int64), maps)
    logit = central.logit(central.own_codes(bank[test]), coarse)
    np.testing.assert_allclose(federated, 1 / (1 + np.exp(-logit)), rtol=0, atol=1e-9)
    assert np.ptp(federated) > 0.1


def test_verify_passes_and_fails_on_a_changed_byte(out: Path) -> None:
    model, trust = str(out / "model"), str(out / "trust.json")
    code, output = _cli("verify", model, "--trust", trust, "--label-party", "bank")
    assert code == 0, output
    assert "vertical scorecard" in output and "platform: the fine bins" in output
    code, output = _cli("verify", model, "--trust", trust, "--json")
    facts = json.loads(output)
    assert code == 0 and facts["model"] == "scorecard" and facts["label_party"] == "bank"
    assert facts["parties"]["platform"]["names_label_party"] is True
    code, output = _cli("verify", model, "--trust", trust, "--label-party", "platform")
    assert code == 1 and "its label party is 'bank'" in output
    for part in ("parties/platform/bins.json", "points.json"):
        path = out / "model" / part
        data = path.read_bytes()
        try:
            path.write_bytes(data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])
            code, output = _cli("verify", model, "--trust", trust)
            assert code == 1 and Path(part).name in output, output
        finally:
            path.write_bytes(data)
    assert _cli("verify", model, "--trust", trust)[0] == 0


def test_a_bank_and_two_platforms(tmp_path: Path) -> None:
    """Two feature parties (the platform's features split between them): the run completes,
    its federated model equals the central equivalent on the rows all three hold (the same
    test AUC), and each platform's part verifies against its own key."""
    frames = sv.generate(700, seed=4)
    platform = frames["platform"]
    cols = list(sv.PLATFORM_FEATURES)
    base = sv.vertical_schema()
    schema = VerticalSchema(
        base.base,
        {"bank": base.parties["bank"], "pay": PartySpec(features=tuple(cols[:5])),
         "shop": PartySpec(features=tuple(cols[5:]))},
    )  # fmt: skip
    data = _write(
        tmp_path / "data",
        schema,
        {"bank": frames["bank"].iloc[:650], "pay": platform[["phone", *cols[:5]]].iloc[30:],
         "shop": platform[["phone", *cols[5:]]].iloc[50:]},
    )  # fmt: skip
    out = tmp_path / "o"
    code, output = _cli(
        "simulate", "--layout", "vertical", "--model", "scorecard", "--dataset", str(data),
        "--schema", str(data / "schema.toml"), "--out", str(out), *OPTIONS,
    )  # fmt: skip
    assert code == 0, output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["vertical"]["parties"] == ["bank", "pay", "shop"]
    assert metrics["federated"]["auc"] == pytest.approx(metrics["centralized"]["auc"], abs=1e-9)
    assert metrics["centralized"]["auc"] > metrics["label_party_only"]["auc"]
    model = load_vertical_scorecard(out / "model", load_store(out / "trust.json"))
    assert list(model.parties) == ["pay", "shop"]
    assert [p.name for p in model.model.platform] == cols
    assert _cli("verify", str(out / "model"), "--trust", str(out / "trust.json"))[0] == 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--trees", "5"], "not meaningful for --model scorecard: trees"),
        (["--max-depth", "2", "--label-only-trees", "1"], "label-only-trees, max-depth"),
        (["--model", "mlp"], "--model mlp is not supported with --layout vertical"),
    ],
)
def test_options_it_does_not_take_exit_2(args: list[str], named: str, tmp_path: Path) -> None:
    model = [] if "--model" in args else ["--model", "scorecard"]
    code, output = _cli(
        "simulate", "--layout", "vertical", *model, *args, "--out", str(tmp_path / "o")
    )
    assert code == 2, output
    assert named in output
    assert not (tmp_path / "o").exists()


def test_its_platform_part_says_it_is_a_scorecards(out: Path) -> None:
    """The platform's part holds no split: it says whose it is, so nothing takes it for a
    trees' part (which would route every applicant alike)."""
    from jointcredit.models.artifact import ArtifactError
    from jointcredit.models.vertical.artifact import load_feature_part, load_label_part

    trust = load_store(out / "trust.json")
    part = load_feature_part(out / "model", "platform", trust)
    assert part.model == "scorecard" and len(part.table) == 0
    with pytest.raises(ArtifactError, match="not a vertical model card"):
        load_label_part(out / "model", trust)


def test_the_label_part_carries_the_held_out_reference(out: Path) -> None:
    """Stability monitoring's reference: the aligned test rows' scores and the bank's own
    attributes (the points table's coarse bins), signed in the bank's part."""
    from jointcredit.models.binning.spec import BinningSpec
    from jointcredit.models.vertical.scorecard.artifact import load_label_part

    label = load_label_part(out / "model", load_store(out / "trust.json"))
    ref = label.reference
    assert ref is not None and ref.rows == label.card.training["test-rows"] > 0
    assert ref.bins == BinningSpec(features=[f.bins for f in label.model.own])
    assert ref.institutions == ["bank"] and sum(c > 0 for c in ref.score_counts) > 1
