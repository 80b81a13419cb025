"""The vertical model artifact: each party's part of a vertical tree ensemble, signed by that
party's own institution key and verified against the federation's trust store on load (no
unverified load path, as `jointcredit.models.artifact`).

Layout::

    OUT/model/                   the label party's part, signed by the label party's key
        vertical.json            `VerticalCard`: which party holds which splits (party ->
                                 its index in the trees and its number of splits), the label
                                 party's features by name (no other party's), the training
                                 settings and metrics, each feature party's part digest (the
                                 SHA-256 of its signed manifest)
        ensemble.npz             the `VerticalEnsemble` (NumPy, loaded with allow_pickle=False)
        bins.json                the label party's own bins (raw values -> codes)
        reference.json           the aligned test rows' score bands and the label party's
                                 feature bins (`jointcredit.models.reference`): what the
                                 service's stability monitoring compares applicants with
        manifest.json/.sig
    OUT/model/parties/<party>/   a feature party's part, signed by that party's key
        part.json                `FeaturePartCard`: party, index, number of splits, features
        splits.npz               its `SplitTable`
        bins.json                its own bins, so it can code a raw applicant
        manifest.json/.sig       (a scorecard's part: no split; `part.json` also holds the
                                 label party's merge maps, fine code -> coarse code)

Public functions (stable: the feature party's scoring service uses them):

- `write_feature_part(model_dir, part, *, created_at, signer, trust) -> str`: write and sign
  `model_dir/parties/<party>/` (built beside it and renamed into place); returns the SHA-256
  of its signed manifest, which the label party records in its card.
- `write_label_part(model_dir, *, ensemble, bins, schema, label_party, parties, training,
  metrics, created_at, signer, trust, reference=None) -> VerticalCard`: write and sign the
  label party's part at `model_dir/` (every file replaced whole, the signature last).
- `held_out_reference(scores, frame, bins, label_party) -> Reference`: the reference a label
  part carries.
- `load_feature_part(model_dir, party, trust, *, expected_sha256=None) -> FeaturePart`:
  verify (signed by an active key of `party`), then load and cross-check.
- `load_label_part(model_dir, trust) -> LabelPart`: the same for the label party's part.
- `load_vertical_model(model_dir, trust) -> VerticalModel`: every part, each feature party's
  manifest digest checked against the label party's card; `VerticalModel.predict_pd` scores
  raw per-party frames (simulations, tests).
- `is_vertical(model_dir) -> bool`: whether a directory holds a vertical model's card.

`ArtifactError` names what failed (a missing file, a digest, a foreign or revoked signer).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, model_validator

from jointcredit.data.schema import Schema
from jointcredit.models.artifact import ArtifactError, weights_bytes
from jointcredit.models.binning.spec import BinningSpec
from jointcredit.models.reference import REFERENCE, Reference, count_rows
from jointcredit.models.scorecard import ScoreScale
from jointcredit.models.trees.tree import CATEGORY_SPLIT, LEAF, check_structure, check_thresholds
from jointcredit.models.vertical.feature_party import SplitTable
from jointcredit.models.vertical.merge_maps import check_merge_maps, coarse_codes
from jointcredit.models.vertical.model import LABEL_PARTY, VerticalEnsemble, VerticalTree
from jointcredit.trust.canonical import canonical_json
from jointcredit.trust.errors import TrustError
from jointcredit.trust.files import UnsafeFile, read_regular, replace_file
from jointcredit.trust.manifest import Verified, sign_directory, verify_directory
from jointcredit.trust.store import TrustStore, check_institution_id

FORMAT = "jointcredit-vertical-model"
PART_FORMAT = "jointcredit-vertical-part"
CARD = "vertical.json"
ENSEMBLE = "ensemble.npz"
BINS = "bins.json"
PART = "part.json"
SPLITS = "splits.npz"
PARTIES = "parties"
MODEL_DIR = "model"  # a run's model directory under OUT
SCORECARD_CARD = "scorecard.json"  # a vertical scorecard's (`scorecard.artifact`)
MAX_NODES = 1 << 22  # more nodes than any configured ensemble can grow: a hostile file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartyEntry(_Strict):
    """A feature party as the label party's card records it."""

    index: int = Field(ge=1)  # its id in the trees (`VerticalTree.owner`)
    splits: int = Field(ge=0)  # how many of the ensemble's nodes it holds
    part_sha256: str  # the SHA-256 of its part's signed manifest


class VerticalCard(_Strict):
    format: str = FORMAT
    version: int = 1
    label_party: str
    features: list[str]  # the label party's, in its codes' order
    data_schema: Schema  # the label party's label and own features only
    parties: dict[str, PartyEntry]
    label_party_splits: int
    score_scale: ScoreScale = ScoreScale()
    training: dict[str, Any]
    metrics: dict[str, Any]
    ensemble_sha256: str
    bins_sha256: str
    created_at: str
    reference_sha256: str | None = None  # none in parts written before it was kept


class FeaturePartCard(_Strict):
    format: str = PART_FORMAT
    version: int = 1
    party: str
    model: Literal["gbdt", "scorecard"] = "gbdt"  # whose part: the trees' or a scorecard's
    index: int = Field(ge=1)
    splits: int = Field(ge=0)
    features: list[str]
    splits_sha256: str
    bins_sha256: str
    created_at: str
    merge: list[list[int]] | None = None  # a scorecard's: fine code -> coarse code per feature
    # The party it trained for, under its own signature: a member signing a label part that
    # names itself cannot also make this part name it. Parts written before it: none.
    label_party: str | None = None

    @model_validator(mode="after")
    def _label_party(self) -> FeaturePartCard:
        if self.label_party is not None:
            check_institution_id(self.label_party)
            if self.label_party == self.party:
                raise ValueError(f"{self.party!r} cannot be its own label party")
        return self


@dataclass(frozen=True)
class FeaturePart:
    """A feature party's part: its split table and the bins its raw columns are coded by."""

    party: str
    index: int
    table: SplitTable
    bins: BinningSpec
    model: Literal["gbdt", "scorecard"] = "gbdt"  # a scorecard's: its fine bins and merge maps
    merge: tuple[np.ndarray, ...] = ()  # a scorecard's: fine code -> coarse code per feature
    label_party: str | None = None  # the label party it trained for, as its card records

    def coarse(self, frame: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
        """(rows, features) int64: a scorecard part's coarse codes of rows (its fine bins,
        then the merge maps): what it answers the label party, never the fine bin."""
        return coarse_codes(self.bins.codes(frame).astype(np.int64), self.merge)

    def sides(self, frame: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
        """(rows, splits) bool: each row's side at each of this party's splits, from its
        raw columns (what it answers the label party, nothing more)."""
        return self.table.sides(self.bins.codes(frame).astype(np.int64))


@dataclass(frozen=True)
class LabelPart:
    card: VerticalCard
    ensemble: VerticalEnsemble
    bins: BinningSpec
    verified: Verified
    reference: Reference | None = None  # stability monitoring's (parts older than it: none)

    def predict_pd(
        self, frame: pd.DataFrame | Mapping[str, Any], sides: Mapping[int, np.ndarray]
    ) -> np.ndarray:
        """PD of rows from the label party's raw columns and each feature party's `sides`
        (by its index in the trees)."""
        return self.ensemble.predict_pd(self.bins.codes(frame).astype(np.int64), sides)


@dataclass(frozen=True)
class VerticalModel:
    label: LabelPart
    parties: dict[str, FeaturePart]

    def predict_pd(self, frames: Mapping[str, pd.DataFrame]) -> np.ndarray:
        """PD of aligned rows given every party's raw frame (same rows, same order)."""
        sides = {p.index: p.sides(frames[name]) for name, p in self.parties.items()}
        return self.label.predict_pd(frames[self.label.card.label_party], sides)


# ---------------------------------------------------------------------------- storage


def ensemble_arrays(ensemble: VerticalEnsemble) -> dict[str, np.ndarray]:
    """The ensemble as flat arrays: every tree's nodes one after the other."""
    trees = ensemble.trees
    width = max((t.category_left.shape[1] for t in trees), default=0)
    out: dict[str, np.ndarray] = {}
    for name, dtype in _TREE_FIELDS.items():
        parts: list[np.ndarray] = [np.asarray(getattr(t, name), dtype=dtype) for t in trees]
        out[name] = np.concatenate(parts) if parts else np.zeros(0, dtype)
    cats = np.zeros((sum(t.n_nodes for t in trees), width), dtype=bool)
    at = 0
    for t in trees:
        cats[at : at + t.n_nodes, : t.category_left.shape[1]] = t.category_left
        at += t.n_nodes
    out["category_left"] = cats
    out["tree_start"] = np.cumsum([0] + [t.n_nodes for t in trees]).astype(np.int64)
    out["base_margin"] = np.array([ensemble.base_margin], dtype=np.float64)
    out["missing"] = np.array(ensemble.missing, dtype=np.int64)
    return out


_TREE_FIELDS: dict[str, type[Any]] = {
    "owner": np.int32,
    "split": np.int32,
    "threshold": np.int32,
    "default_left": np.bool_,
    "special_left": np.int64,
    "left": np.int32,
    "right": np.int32,
    "value": np.float64,
    "cover": np.float64,
}


def ensemble_from_arrays(arrays: Mapping[str, np.ndarray]) -> VerticalEnsemble:
    """Rebuild and check an ensemble from `ensemble_arrays`' form; ValueError if malformed."""
    needed = {*_TREE_FIELDS, "category_left", "tree_start", "base_margin", "missing"}
    if absent := needed - set(arrays):
        raise ValueError(f"ensemble arrays missing: {sorted(absent)}")
    n = len(arrays["owner"])
    if n > MAX_NODES or any(len(arrays[k]) != n for k in (*_TREE_FIELDS, "category_left")):
        raise ValueError("ensemble arrays of different lengths")
    if np.asarray(arrays["category_left"]).ndim != 2:
        raise ValueError("category_left is not a (nodes, width) table")
    bounds = np.asarray(arrays["tree_start"], dtype=np.int64)
    if len(bounds) < 1 or bounds[0] != 0 or bounds[-1] != n or np.any(np.diff(bounds) < 1):
        raise ValueError("tree_start does not partition the nodes")
    missing = tuple(int(m) for m in np.asarray(arrays["missing"]).tolist())
    if np.asarray(arrays["base_margin"]).shape != (1,):
        raise ValueError("one base margin")
    trees = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        fields: dict[str, np.ndarray] = {
            k: np.asarray(arrays[k][a:b], dtype=d) for k, d in _TREE_FIELDS.items()
        }
        tree = VerticalTree(**fields, category_left=np.asarray(arrays["category_left"][a:b], bool))
        _check_tree(tree, len(missing))
        trees.append(tree)
    base = float(np.asarray(arrays["base_margin"], dtype=np.float64)[0])
    return VerticalEnsemble(base, missing, tuple(trees))


def _check_tree(t: VerticalTree, n_own: int) -> None:
    internal = t.owner != LEAF
    check_structure(t.left, t.right, internal, t.n_nodes)
    if np.any(t.owner < LEAF) or np.any(internal & (t.split < 0)):
        raise ValueError("a node with a negative owner or split")
    mine = t.owner == LABEL_PARTY
    if np.any(t.split[mine] >= n_own):
        raise ValueError("a split on a feature the label party does not have")
    check_thresholds(t.threshold, t.category_left, mine)


def table_arrays(table: SplitTable) -> dict[str, np.ndarray]:
    width = max((len(c) for c in table.category_left), default=0)
    cats = np.zeros((len(table), width), dtype=bool)
    for i, c in enumerate(table.category_left):
        cats[i, : len(c)] = c
    return {
        "missing": np.array(table.missing, dtype=np.int64),
        "feature": np.array(table.feature, dtype=np.int64),
        "threshold": np.array(table.threshold, dtype=np.int64),
        "default_left": np.array(table.default_left, dtype=bool),
        "special_left": np.array(table.special_left, dtype=np.int64),
        "category_left": cats,
    }


def table_from_arrays(arrays: Mapping[str, np.ndarray]) -> SplitTable:
    needed = {"missing", "feature", "threshold", "default_left", "special_left", "category_left"}
    if absent := needed - set(arrays):
        raise ValueError(f"split table arrays missing: {sorted(absent)}")
    missing = tuple(int(m) for m in np.asarray(arrays["missing"]).tolist())
    n = len(arrays["feature"])
    cats = np.asarray(arrays["category_left"], dtype=bool)
    if n > MAX_NODES or any(
        len(arrays[k]) != n for k in ("threshold", "default_left", "special_left")
    ):
        raise ValueError("split table arrays of different lengths")
    if cats.ndim != 2 or len(cats) != n:
        raise ValueError("category_left is not a (splits, width) table")
    feature = np.asarray(arrays["feature"], dtype=np.int64)
    if np.any((feature < 0) | (feature >= len(missing))):
        raise ValueError("a split on a feature the party does not have")
    threshold = np.asarray(arrays["threshold"], dtype=np.int64)
    if np.any((threshold < -1) & (threshold != CATEGORY_SPLIT)):
        raise ValueError("a split with a negative threshold")
    if np.any(threshold == CATEGORY_SPLIT) and cats.shape[1] == 0:
        raise ValueError("a split by a category set with no category in its set")
    return SplitTable(
        missing,
        feature.tolist(),
        threshold.tolist(),
        np.asarray(arrays["default_left"], dtype=bool).tolist(),
        np.asarray(arrays["special_left"], dtype=np.int64).tolist(),
        list(cats),
    )


def _npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k].copy() for k in npz.files}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- writing


def part_directory(model_dir: Path, party: str) -> Path:
    return model_dir / PARTIES / check_institution_id(party)


def write_feature_part(
    model_dir: Path,
    part: FeaturePart,
    *,
    created_at: str,
    signer: Ed25519PrivateKey,
    trust: TrustStore,
) -> str:
    """Write and sign `model_dir/parties/<party>/` with the party's own key; returns the
    SHA-256 of its signed manifest. Built in a fresh directory beside the target and renamed
    into place: a reader sees the old part or the whole new one."""
    target = part_directory(model_dir, part.party)
    if part.bins.names and len(part.bins.names) != len(part.table.missing):
        raise ValueError("the bins and the split table have different features")
    splits = weights_bytes(table_arrays(part.table))
    bins = canonical_json(part.bins.model_dump(mode="json"))
    if part.model == "scorecard" and len(part.table):
        raise ValueError("a vertical scorecard's part holds no split")
    merge = None
    if part.model == "scorecard":
        n_bins = [f.n_bins for f in part.bins.features]
        maps = check_merge_maps(part.merge, n_bins, part.bins.names)
        merge = [m.tolist() for m in maps]
    elif part.merge:
        raise ValueError("only a vertical scorecard's part holds merge maps")
    card = FeaturePartCard(
        party=part.party,
        model=part.model,
        index=part.index,
        splits=len(part.table),
        features=part.bins.names,
        splits_sha256=_sha(splits),
        bins_sha256=_sha(bins),
        created_at=created_at,
        merge=merge,
        label_party=part.label_party,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{part.party}."))
    try:
        (tmp / SPLITS).write_bytes(splits)
        (tmp / BINS).write_bytes(bins)
        (tmp / PART).write_bytes(canonical_json(card.model_dump(mode="json", exclude_none=True)))
        sign_directory(
            tmp,
            [PART, SPLITS, BINS],
            {"kind": PART_FORMAT, "party": part.party, "created_at": created_at},
            signer,
            trust,
            institution=part.party,
        )
        tmp.chmod(0o755)
        digest = _sha((tmp / "manifest.json").read_bytes())
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return digest


def _swap_in(new: Path, target: Path) -> None:
    """Put directory `new` at `target`: the old one renamed aside first, restored if the
    rename in fails, removed only once the new one is in place."""
    aside = None
    if target.is_symlink() or target.exists():
        aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
        aside = aside / target.name
        os.rename(target, aside)
    try:
        os.replace(new, target)
    except BaseException:
        if aside is not None:
            os.rename(aside, target)
            aside.parent.rmdir()
        raise
    if aside is not None:
        if aside.is_symlink():
            aside.unlink()
        else:
            shutil.rmtree(aside)
        aside.parent.rmdir()


def write_label_part(
    model_dir: Path,
    *,
    ensemble: VerticalEnsemble,
    bins: BinningSpec,
    schema: Schema,
    label_party: str,
    parties: Mapping[str, PartyEntry],
    training: dict[str, Any],
    metrics: dict[str, Any],
    created_at: str,
    signer: Ed25519PrivateKey,
    trust: TrustStore,
    score_scale: ScoreScale | None = None,
    reference: Reference | None = None,
) -> VerticalCard:
    """Write and sign the label party's part at `model_dir/` with its own key. `schema`: the
    label party's label and own features (in `bins`' order); `parties`: every feature party
    the trees route through, with its part's manifest digest (`write_feature_part`'s)."""
    check_institution_id(label_party)
    if list(schema.features) != bins.names or len(bins.names) != len(ensemble.missing):
        raise ValueError("the schema, the bins and the ensemble have different features")
    index = {e.index: name for name, e in parties.items()}
    if len(index) != len(parties) or set(ensemble.parties()) - set(index):
        raise ValueError("every feature party of the trees needs one entry with its own index")
    owners = np.concatenate([t.owner for t in ensemble.trees]) if ensemble.trees else np.zeros(0)
    for name, entry in parties.items():
        if int((owners == entry.index).sum()) != entry.splits:
            raise ValueError(f"{name}: the trees hold another number of its splits")
    ens = weights_bytes(ensemble_arrays(ensemble))
    bbytes = canonical_json(bins.model_dump(mode="json"))
    ref = reference_bytes(reference, bins.names)
    card = VerticalCard(
        label_party=label_party,
        features=bins.names,
        data_schema=schema,
        parties=dict(parties),
        label_party_splits=int((owners == LABEL_PARTY).sum()),
        score_scale=score_scale or ScoreScale(),
        training=training,
        metrics=metrics,
        ensemble_sha256=_sha(ens),
        bins_sha256=_sha(bbytes),
        created_at=created_at,
        reference_sha256=None if ref is None else _sha(ref),
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    # Each file whole (a crash leaves the old one or the new one); the signature comes last,
    # so a part caught half-written does not verify.
    replace_file(model_dir / ENSEMBLE, ens, mode=0o644)
    replace_file(model_dir / BINS, bbytes, mode=0o644)
    if ref is not None:
        replace_file(model_dir / REFERENCE, ref, mode=0o644)
    replace_file(model_dir / CARD, canonical_json(card.model_dump(mode="json")), mode=0o644)
    sign_directory(
        model_dir,
        [CARD, ENSEMBLE, BINS, *([REFERENCE] if ref is not None else [])],
        {
            "kind": FORMAT,
            "party": label_party,
            "parties": {name: e.part_sha256 for name, e in sorted(parties.items())},
            "training": training,
            "metrics": metrics,
            "created_at": created_at,
        },
        signer,
        trust,
        institution=label_party,
    )
    return card


def held_out_reference(
    scores: np.ndarray, frame: pd.DataFrame, bins: BinningSpec, label_party: str
) -> Reference:
    """The label party's reference: its aligned test rows' 350-950 scores by band and its own
    features by `bins`. The held-out rows, not the training rows: the label party has every
    held-out row's score for both models, while a scorecard's training rows never get one
    (the platform's codes of them do not reach the bank)."""
    return Reference.from_vector(count_rows(scores, frame, bins), bins, [label_party])


def reference_bytes(reference: Reference | None, own: list[str]) -> bytes | None:
    """`reference` as stored, refused when it counts a feature the label party does not
    hold (its part must name no other party's feature)."""
    if reference is None:
        return None
    if foreign := set(reference.bins.names) - set(own):
        raise ValueError(f"the reference counts features the label party does not hold: "
                         f"{sorted(foreign)}")  # fmt: skip
    return reference.to_bytes()


def load_reference(
    directory: Path, verified: Verified, sha256: str | None, own: list[str]
) -> Reference | None:
    """A label part's reference, checked against its card's digest (None: it has none)."""
    if sha256 is None:
        return None
    if REFERENCE not in verified.contents:
        raise ArtifactError(f"{directory}: the signed manifest does not cover {REFERENCE}")
    _digest_check(directory, REFERENCE, verified.contents[REFERENCE], sha256)
    try:
        reference = Reference.model_validate_json(verified.contents[REFERENCE])
        reference_bytes(reference, own)
    except ValueError as exc:
        raise ArtifactError(f"{directory / REFERENCE}: invalid reference: {exc}") from exc
    return reference


# ---------------------------------------------------------------------------- loading


def is_vertical(model_dir: Path) -> bool:
    """A vertical model: the trees' card, or the vertical scorecard's."""
    return (model_dir / CARD).is_file() or (model_dir / SCORECARD_CARD).is_file()


def _verified(directory: Path, trust: TrustStore, party: str, files: set[str]) -> Verified:
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not a vertical model part")
    try:
        verified = verify_directory(directory, trust, institution=party)
    except TrustError as exc:
        raise ArtifactError(str(exc)) from exc
    if missing := files - set(verified.manifest["files"]):
        raise ArtifactError(f"{directory}: the signed manifest does not cover {sorted(missing)}")
    return verified


def _digest_check(directory: Path, name: str, data: bytes, expected: str) -> None:
    if _sha(data) != expected:
        raise ArtifactError(f"{directory / name}: SHA-256 does not match the part's card")


_Arrays = TypeVar("_Arrays")  # what a part's arrays file is read into


def _arrays_and_bins(
    directory: Path,
    verified: Verified,
    arrays: tuple[str, str],
    bins_sha256: str,
    read: Callable[[dict[str, np.ndarray]], _Arrays],
) -> tuple[_Arrays, BinningSpec]:
    """A part's arrays file (`arrays`: its name and the SHA-256 its card records), read by
    `read`, and its bins, both checked against their card's digests first."""
    name, sha256 = arrays
    _digest_check(directory, name, verified.contents[name], sha256)
    _digest_check(directory, BINS, verified.contents[BINS], bins_sha256)
    parsed = read(_npz(verified.contents[name]))
    return parsed, BinningSpec.model_validate_json(verified.contents[BINS])


def load_feature_part(
    model_dir: Path, party: str, trust: TrustStore, *, expected_sha256: str | None = None
) -> FeaturePart:
    """Verify `model_dir/parties/<party>/` (signed by an active key of `party`; with
    `expected_sha256`, exactly the manifest the label party recorded), then load it."""
    directory = part_directory(model_dir, party)
    verified = _verified(directory, trust, party, {PART, SPLITS, BINS})
    if expected_sha256 is not None and verified.manifest_sha256 != expected_sha256:
        raise ArtifactError(
            f"{directory}: manifest SHA-256 {verified.manifest_sha256} is not the part the "
            f"label party's card records ({expected_sha256})"
        )
    try:
        card = FeaturePartCard.model_validate_json(verified.contents[PART])
        if card.format != PART_FORMAT or card.party != party:
            raise ValueError(f"a {card.format} part of {card.party!r}")
        table, bins = _arrays_and_bins(
            directory, verified, (SPLITS, card.splits_sha256), card.bins_sha256, table_from_arrays
        )
    except ValueError as exc:
        raise ArtifactError(f"{directory}: invalid part: {exc}") from exc
    if bins.names != card.features or len(table.missing) != len(bins.names):
        raise ArtifactError(f"{directory}: the bins, the card and the split table disagree")
    if len(table) != card.splits:
        raise ArtifactError(f"{directory}: {len(table)} splits, the card says {card.splits}")
    if (card.model == "scorecard") != (card.merge is not None):
        raise ArtifactError(f"{directory}: merge maps belong to a scorecard's part, and only")
    try:
        n_bins = [f.n_bins for f in bins.features]
        merge = check_merge_maps(card.merge, n_bins, bins.names) if card.merge is not None else ()
    except ValueError as exc:
        raise ArtifactError(f"{directory}: invalid merge maps: {exc}") from exc
    return FeaturePart(party, card.index, table, bins, card.model, merge, card.label_party)


def check_label_party(model_dir: Path, label_party: str, part: FeaturePart) -> None:
    """A feature part that names the label party it trained for (signed by its own party)
    must name the one the label party's card does."""
    if part.label_party is not None and part.label_party != label_party:
        raise ArtifactError(
            f"{part_directory(model_dir, part.party)}: {part.party} trained for label party "
            f"{part.label_party!r}, not {label_party!r}"
        )


def load_label_part(model_dir: Path, trust: TrustStore) -> LabelPart:
    """Verify the label party's part (signed by an active key of the label party its card
    names), then load and cross-check it."""
    try:
        claimed = VerticalCard.model_validate_json(read_regular(model_dir / CARD)).label_party
    except (FileNotFoundError, UnsafeFile, ValueError) as exc:
        raise ArtifactError(f"{model_dir / CARD}: not a vertical model card: {exc}") from exc
    # The card names its signer; the signature is then checked against that party's keys,
    # and the card re-read from the verified bytes.
    verified = _verified(model_dir, trust, claimed, {CARD, ENSEMBLE, BINS})
    try:
        card = VerticalCard.model_validate_json(verified.contents[CARD])
        if card.format != FORMAT or card.label_party != claimed:
            raise ValueError(f"a {card.format} card of {card.label_party!r}")
        ensemble, bins = _arrays_and_bins(
            model_dir,
            verified,
            (ENSEMBLE, card.ensemble_sha256),
            card.bins_sha256,
            ensemble_from_arrays,
        )
    except ValueError as exc:
        raise ArtifactError(f"{model_dir}: invalid vertical model: {exc}") from exc
    if bins.names != card.features or len(ensemble.missing) != len(bins.names):
        raise ArtifactError(f"{model_dir}: the bins, the card and the ensemble disagree")
    unknown = set(ensemble.parties()) - {e.index for e in card.parties.values()}
    if unknown:
        raise ArtifactError(f"{model_dir}: trees route through unnamed parties {sorted(unknown)}")
    reference = load_reference(model_dir, verified, card.reference_sha256, bins.names)
    return LabelPart(card, ensemble, bins, verified, reference)


def load_vertical_model(model_dir: Path, trust: TrustStore) -> VerticalModel:
    """The label party's part and every feature party's, each verified against its own
    party's keys and the digest the label party's card recorded for it."""
    label = load_label_part(model_dir, trust)
    parties = {}
    for name, entry in label.card.parties.items():
        part = load_feature_part(model_dir, name, trust, expected_sha256=entry.part_sha256)
        if part.model != "gbdt" or part.index != entry.index or len(part.table) != entry.splits:
            raise ArtifactError(f"{part_directory(model_dir, name)}: not the part the card names")
        check_label_party(model_dir, label.card.label_party, part)
        split_ids = [t.split[t.owner == entry.index] for t in label.ensemble.trees if t.n_nodes]
        if any(np.any(s >= len(part.table)) for s in split_ids):
            raise ArtifactError(f"{model_dir}: a split id {name}'s table does not hold")
        parties[name] = part
    return VerticalModel(label, parties)
