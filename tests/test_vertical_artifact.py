"""The vertical model artifact: each party's part signed by its own key, loaded only verified,
scoring as the trained parts did; a changed byte, a part signed by another party or a revoked
key, or a feature party's part swapped for another validly signed one is refused."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jointcredit.data.vertical_datasets import load_vertical_dataset
from jointcredit.models.artifact import ArtifactError
from jointcredit.models.reference import Reference, count_rows
from jointcredit.models.trees import TreeParams
from jointcredit.models.trees import train as central_train
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.trees.tree import CATEGORY_SPLIT
from jointcredit.models.vertical import artifact
from jointcredit.models.vertical.artifact import (
    FeaturePart,
    PartyEntry,
    held_out_reference,
    is_vertical,
    load_feature_part,
    load_label_part,
    load_vertical_model,
    part_directory,
    table_from_arrays,
    write_feature_part,
    write_label_part,
)
from jointcredit.models.vertical.feature_party import FeatureParty, SplitTable
from jointcredit.models.vertical.label_party import train
from jointcredit.models.vertical.messages import SplitOrder
from jointcredit.models.vertical.party_bins import joined_bins, party_bins, party_schema
from jointcredit.privacy.paillier import HeuSecretKey, public_key
from jointcredit.trust import keys, store
from jointcredit.trust.store import TrustStore

CREATED = "2026-12-07T00:00:00+00:00"


@dataclass
class Trained:
    frames: dict[str, pd.DataFrame]  # aligned rows, per party
    trust: TrustStore
    keys: dict[str, Ed25519PrivateKey]
    coordinator: Ed25519PrivateKey
    central_pd: np.ndarray
    model_dir: Path


def _write(t: Trained, out: Path, parties: dict[str, FeatureParty], label_args: dict) -> None:
    entries = {}
    for name, fp in parties.items():
        bins = label_args.pop(f"bins_{name}")
        part = FeaturePart(name, fp.party, fp.table, bins, label_party=label_args["label_party"])
        digest = write_feature_part(
            out, part, created_at=CREATED, signer=t.keys[name], trust=t.trust
        )
        entries[name] = PartyEntry(index=fp.party, splits=len(fp.table), part_sha256=digest)
    write_label_part(
        out, parties=entries, created_at=CREATED, signer=t.keys["bank"], trust=t.trust,
        **label_args,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    data = load_vertical_dataset("synthetic-vertical", rows=400, seed=3)
    bank, platform = data.parties["bank"].frame, data.parties["platform"].frame
    joined = bank.merge(platform, on="phone")
    frames = {
        "bank": joined[["phone", *bank.columns[1:]]],
        "platform": joined[list(platform.columns)],
    }
    schemas = {p: party_schema(data.schema, p) for p in frames}
    bins = {
        p: party_bins(frames[p], schemas[p], max_bins=8, max_categories=20, min_count=1)
        for p in frames
    }
    codes = {p: bins[p].codes(frames[p]).astype(np.int64) for p in frames}
    y = frames["bank"]["defaulted"].to_numpy(dtype=float)
    params = TreeParams(n_trees=3, max_depth=3, learning_rate=0.3)
    secret = HeuSecretKey()
    fp = FeatureParty(
        1, codes["platform"], bin_layout(bins["platform"]), public_key(secret.public.to_bytes())
    )
    ensemble = train(codes["bank"], y, bin_layout(bins["bank"]), [fp], params, secret)
    both = joined_bins([bins["bank"], bins["platform"]])
    central = central_train(
        np.hstack([codes["bank"], codes["platform"]]), y, bin_layout(both), params
    )
    central_pd = central.predict_pd(np.hstack([codes["bank"], codes["platform"]]))

    coordinator = keys.generate()
    trust = store.create("vertical-test", coordinator)
    party_keys = {p: keys.generate() for p in ("bank", "platform", "other")}
    for p, k in party_keys.items():
        trust = store.add_key(trust, p, k.public_key(), coordinator)
    t = Trained(frames, trust, party_keys, coordinator, central_pd, tmp_path_factory.mktemp("m"))
    _write(
        t,
        t.model_dir,
        {"platform": fp},
        {
            "bins_platform": bins["platform"],
            "ensemble": ensemble,
            "bins": bins["bank"],
            "schema": schemas["bank"],
            "label_party": "bank",
            "training": {"trees": 3},
            "metrics": {"auc": 0.5},
        },
    )
    return t


def _copy(t: Trained, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(t.model_dir, out)
    return out


def test_round_trip_scores_as_the_central_model(trained: Trained) -> None:
    assert is_vertical(trained.model_dir)
    model = load_vertical_model(trained.model_dir, trained.trust)
    pd_ = model.predict_pd(trained.frames)
    assert np.max(np.abs(pd_ - trained.central_pd)) < 1e-9
    card = model.label.card
    assert card.label_party == "bank" and card.parties["platform"].index == 1
    assert card.label_party_splits + card.parties["platform"].splits == sum(
        int((t.owner >= 0).sum()) for t in model.label.ensemble.trees
    )
    # The label party's card names its own features only.
    assert set(card.features) == set(trained.frames["bank"].columns) - {"phone", "defaulted"}
    assert not set(card.data_schema.features) & set(trained.frames["platform"].columns)
    assert model.label.verified.key_id == keys.key_id(trained.keys["bank"])


def test_a_feature_party_loads_its_own_part_alone(trained: Trained) -> None:
    part = load_feature_part(trained.model_dir, "platform", trained.trust)
    sides = part.sides(trained.frames["platform"].head(5))
    assert sides.shape == (5, len(part.table))


def test_a_changed_byte_is_refused(trained: Trained, tmp_path: Path) -> None:
    out = _copy(trained, tmp_path)
    splits = part_directory(out, "platform") / "splits.npz"
    data = bytearray(splits.read_bytes())
    data[-20] ^= 1
    splits.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"splits\.npz"):
        load_vertical_model(out, trained.trust)
    ens = out / "ensemble.npz"
    data = bytearray(ens.read_bytes())
    data[-20] ^= 1
    ens.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"ensemble\.npz"):
        load_label_part(out, trained.trust)


def test_a_part_signed_by_another_party_is_refused(trained: Trained, tmp_path: Path) -> None:
    out = _copy(trained, tmp_path)
    part = load_feature_part(out, "platform", trained.trust)
    # The bank rewrites the platform's part under its own key: the signature names the bank.
    from jointcredit.trust import manifest

    directory = part_directory(out, "platform")
    manifest.sign_directory(
        directory, ["part.json", "splits.npz", "bins.json"], {"kind": "x"},
        trained.keys["bank"], trained.trust, institution="bank",
    )  # fmt: skip
    with pytest.raises(ArtifactError, match=r"\(bank\), not by an active key of platform"):
        load_feature_part(out, "platform", trained.trust)
    del part


def test_a_swapped_part_is_refused(trained: Trained, tmp_path: Path) -> None:
    """A validly signed part of the platform's, but not the one the label party recorded."""
    out = _copy(trained, tmp_path)
    part = load_feature_part(out, "platform", trained.trust)
    write_feature_part(
        out, part, created_at="2027-01-01T00:00:00+00:00", signer=trained.keys["platform"],
        trust=trained.trust,
    )  # fmt: skip
    load_feature_part(out, "platform", trained.trust)  # valid on its own
    with pytest.raises(ArtifactError, match="not the part the label party's card records"):
        load_vertical_model(out, trained.trust)


def test_a_member_cannot_claim_the_platforms_part_as_trained_for_it(
    trained: Trained, tmp_path: Path
) -> None:
    """Any member can sign a label part naming itself the label party and recording the
    platform's real part: the platform's own signed part names the bank, so the model is
    refused; a part that names itself its label party is never written."""
    out = _copy(trained, tmp_path)
    label = load_label_part(out, trained.trust)
    assert load_feature_part(out, "platform", trained.trust).label_party == "bank"
    card = label.card
    features = {n: card.data_schema.features[n] for n in card.features}  # in the bins' order
    write_label_part(
        out, ensemble=label.ensemble, bins=label.bins,
        schema=card.data_schema.model_copy(update={"features": features}),
        label_party="other", parties=card.parties, training=card.training, metrics=card.metrics,
        created_at=CREATED, signer=trained.keys["other"], trust=trained.trust,
    )  # fmt: skip
    assert load_label_part(out, trained.trust).card.label_party == "other"  # valid on its own
    with pytest.raises(ArtifactError, match="trained for label party 'bank', not 'other'"):
        load_vertical_model(out, trained.trust)
    part = load_feature_part(trained.model_dir, "platform", trained.trust)
    with pytest.raises(ValueError, match="cannot be its own label party"):
        write_feature_part(
            tmp_path / "own", replace(part, label_party="platform"), created_at=CREATED,
            signer=trained.keys["platform"], trust=trained.trust,
        )  # fmt: skip


def test_a_revoked_or_unknown_key_is_refused(trained: Trained) -> None:
    revoked, _ = store.revoke(trained.trust, trained.coordinator, institution="platform")
    with pytest.raises(ArtifactError, match="platform, revoked"):
        load_feature_part(trained.model_dir, "platform", revoked)
    stranger = store.create("vertical-test", keys.generate())
    with pytest.raises(ArtifactError, match="no one in the trust store"):
        load_label_part(trained.model_dir, stranger)


def test_writing_refuses_a_key_of_another_party(trained: Trained, tmp_path: Path) -> None:
    part = load_feature_part(trained.model_dir, "platform", trained.trust)
    with pytest.raises(Exception, match="not an active key of platform"):
        write_feature_part(
            tmp_path, part, created_at=CREATED, signer=trained.keys["bank"], trust=trained.trust
        )
    assert not (tmp_path / "parties" / "platform").exists()


def test_a_part_rewritten_is_never_missing(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old part stays in place until the new one is: a failed rename leaves it whole."""
    out = _copy(trained, tmp_path)
    part = load_feature_part(out, "platform", trained.trust)
    target = part_directory(out, "platform")
    real = artifact.os.replace

    def failing(src: object, dst: object) -> None:
        if Path(str(dst)) == target:
            raise OSError("disk full")
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(artifact.os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        write_feature_part(
            out, part, created_at=CREATED, signer=trained.keys["platform"], trust=trained.trust
        )
    monkeypatch.undo()
    load_vertical_model(out, trained.trust)  # the old part, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["platform"]


def test_a_split_table_refuses_splits_out_of_range() -> None:
    table = SplitTable((5, 5))
    rows = np.arange(3, dtype=np.int64)
    empty_set = SplitOrder(0, CATEGORY_SPLIT, True, 0, np.zeros(0, bool), rows)
    with pytest.raises(ValueError, match="category set of 0 codes"):
        table.add(empty_set)
    with pytest.raises(ValueError, match="threshold 9"):
        table.add(SplitOrder(1, 9, True, 0, np.zeros(0, bool), rows), (6, 6))
    with pytest.raises(ValueError, match="threshold -5"):
        table.add(SplitOrder(1, -5, True, 0, np.zeros(0, bool), rows))
    assert len(table) == 0
    arrays = {
        "missing": np.array([5]), "feature": np.array([0]),
        "threshold": np.array([CATEGORY_SPLIT]), "default_left": np.array([True]),
        "special_left": np.array([0]), "category_left": np.zeros((1, 0), bool),
    }  # fmt: skip
    with pytest.raises(ValueError, match="no category in its set"):
        table_from_arrays(arrays)


def test_verify_holds_a_vertical_model_to_its_expected_label_party(
    trained: Trained, tmp_path: Path
) -> None:
    """Any member of the trust store can sign a vertical model naming itself the label party:
    `verify --label-party` refuses one whose label party is not the one expected."""
    from typer.testing import CliRunner

    from jointcredit.cli.main import app

    trust_file = tmp_path / "trust.json"
    store.save_store(trust_file, trained.trust)
    base = ["verify", str(trained.model_dir), "--trust", str(trust_file),
            "--trust-any-coordinator"]  # fmt: skip
    runner = CliRunner()
    assert runner.invoke(app, [*base, "--label-party", "bank"]).exit_code == 0
    wrong = runner.invoke(app, [*base, "--label-party", "platform"])
    assert wrong.exit_code == 1
    assert "its label party is 'bank', not 'platform'" in wrong.output
    vouched = runner.invoke(app, base)
    assert "bank is the label party its feature parties trained for (platform)" in vouched.output
    assert "names no label party" not in vouched.output
    # A platform part written before parts named their label party: verify says so.
    out = _copy(trained, tmp_path)
    label = load_label_part(out, trained.trust)
    part = replace(load_feature_part(out, "platform", trained.trust), label_party=None)
    digest = write_feature_part(
        out, part, created_at=CREATED, signer=trained.keys["platform"], trust=trained.trust
    )
    card = label.card
    features = {n: card.data_schema.features[n] for n in card.features}  # in the bins' order
    parties = {"platform": card.parties["platform"].model_copy(update={"part_sha256": digest})}
    write_label_part(
        out, ensemble=label.ensemble, bins=label.bins,
        schema=card.data_schema.model_copy(update={"features": features}),
        label_party="bank", parties=parties, training=card.training, metrics=card.metrics,
        created_at=CREATED, signer=trained.keys["bank"], trust=trained.trust,
    )  # fmt: skip
    old = runner.invoke(app, ["verify", str(out), *base[2:]])
    assert old.exit_code == 0 and "platform's part names no label party" in old.output


def _with_reference(t: Trained, out: Path, **overrides: object) -> Path:
    """The trained label part rewritten at `out` with a held-out reference (`overrides`:
    write_label_part's arguments to change)."""
    label = load_label_part(t.model_dir, t.trust)
    bank = t.frames["bank"]
    pd_ = label.predict_pd(bank, {1: load_feature_part(t.model_dir, "platform", t.trust).sides(
        t.frames["platform"])})  # fmt: skip
    scores = label.card.score_scale.score(pd_)
    stored = label.card.data_schema  # its features in the bins' order, as written
    schema = stored.model_copy(
        update={"features": {n: stored.features[n] for n in label.bins.names}}
    )
    args: dict[str, object] = dict(
        ensemble=label.ensemble, bins=label.bins, schema=schema,
        label_party="bank", parties=label.card.parties, training={"trees": 3}, metrics={},
        created_at=CREATED, signer=t.keys["bank"], trust=t.trust,
        reference=held_out_reference(scores, bank, label.bins, "bank"),
    )  # fmt: skip
    shutil.copytree(t.model_dir, out)
    write_label_part(out, **{**args, **overrides})  # type: ignore[arg-type]
    return out


def test_the_reference_is_signed_with_the_label_part(trained: Trained, tmp_path: Path) -> None:
    """The held-out reference (stability monitoring's) rides in the label party's signed part:
    loaded as written, a changed byte refused, one counting another party's feature never
    written; a part without one loads with none."""
    assert load_label_part(trained.model_dir, trained.trust).reference is None
    out = _with_reference(trained, tmp_path / "with")
    label = load_label_part(out, trained.trust)
    ref = label.reference
    assert ref is not None and ref.rows == len(trained.frames["bank"])
    assert ref.bins.names == label.bins.names and ref.institutions == ["bank"]
    assert sum(ref.score_counts) == ref.rows and len(set(ref.score_counts)) > 1
    assert "reference.json" in label.verified.manifest["files"]

    path = out / "reference.json"
    path.write_bytes(path.read_bytes().replace(b'"rows":', b'"rows": ', 1))
    with pytest.raises(ArtifactError, match=r"reference\.json"):
        load_label_part(out, trained.trust)

    platform = load_feature_part(trained.model_dir, "platform", trained.trust)
    foreign = Reference.from_vector(
        count_rows(np.full(len(trained.frames["platform"]), 600), trained.frames["platform"],
                   platform.bins), platform.bins, ["bank"],
    )  # fmt: skip
    with pytest.raises(ValueError, match="does not hold"):
        _with_reference(trained, tmp_path / "foreign", reference=foreign)
