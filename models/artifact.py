"""The model artifact: everything needed to score, and nothing of the training code's state.

Layout of a model directory::

    weights.npz          model parameters (NumPy, loaded with allow_pickle=False: no code runs)
    preprocessing.json   the federated `PreprocessingSpec`
    bins.json            gradient-boosted trees only: the agreed fine bins (a `BinningSpec`:
                         raw values -> codes)
    model.json           `ModelCard`: architecture, score scale, schema, institutions,
                         training config, headline metrics, digests of the files above
                         (binned scorecard: also its points table)
    binning.json         binned scorecard only: the federation's bins and IV table
    scorecard.csv        binned scorecard only: the points table (base points, attributes)
    reference.json       final models: the federation's training rows per score band and
                         feature bin (`jointcredit.models.reference`; stability monitoring)
    manifest.json        digests of the files above, training and privacy settings, metrics,
                         each round's accepted update digests (binned scorecard: also the
                         binning replies'), the trust store's digest
    manifest.sig         the coordinator's Ed25519 signature over manifest.json

There is no unverified load path: `load_artifact` checks the coordinator's signature against a
verified trust store before it reads a single weight.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict
from torch import nn

from jointcredit.data.schema import Schema
from jointcredit.federation.checkpoints import MANIFEST_RUN_ID, signed_run_id
from jointcredit.models.binning.spec import BinningSpec
from jointcredit.models.binning.table import BinningTable
from jointcredit.models.learners import Architecture, FeatureColumns, feature_columns, learner
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.reference import REFERENCE, Reference
from jointcredit.models.scorecard import PointsTable, ScoreScale, points_table
from jointcredit.models.training import predict_pd
from jointcredit.trust.canonical import canonical_json
from jointcredit.trust.errors import TrustError
from jointcredit.trust.manifest import Verified, sign_directory, verify_directory
from jointcredit.trust.store import TrustStore

FORMAT = "jointcredit-model"
WEIGHTS = "weights.npz"
PREPROCESSING = "preprocessing.json"
CARD = "model.json"
BINNING = "binning.json"
SCORECARD = "scorecard.csv"
BINS = "bins.json"
# The manifest's record of the signed binning replies a binned model's bins and WOE came from
# (a manifest key, not a wire-protocol record).
MANIFEST_BINNING = "binning-replies"
# What the artifact is, inside what is signed: a run's final model or the checkpoint of one of
# its rounds (a copied checkpoint must not pass for the final model).
MANIFEST_STAGE = "stage"
Stage = Literal["final", "checkpoint"]
FINAL: Stage = "final"
CHECKPOINT: Stage = "checkpoint"


class ArtifactError(ValueError):
    """A model directory that is missing, incomplete or inconsistent."""


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: str = FORMAT
    version: int = 1
    architecture: Architecture
    score_scale: ScoreScale
    data_schema: Schema
    institutions: list[str]
    training: dict[str, Any]
    metrics: dict[str, Any]
    weights_sha256: str
    preprocessing_sha256: str
    created_at: str
    scorecard: PointsTable | None = None  # the binned scorecard's points (as scorecard.csv)
    bins_sha256: str | None = None  # gradient-boosted trees: bins.json
    # Gradient-boosted trees: each numeric feature's trimmed training span, from the summed
    # fine-grid histogram their bins came from (the binned scorecard keeps its own in
    # binning.json). Absent from cards written before it existed.
    spans: dict[str, tuple[float, float]] | None = None


def weights_bytes(state: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    # Sorted names + uncompressed npz: identical weights give identical bytes.
    arrays = {k: np.ascontiguousarray(state[k]) for k in sorted(state)}
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def save_artifact(
    out: Path,
    *,
    state: dict[str, np.ndarray],
    spec: PreprocessingSpec,
    architecture: Architecture,
    schema: Schema,
    institutions: list[str],
    training: dict[str, Any],
    metrics: dict[str, Any],
    created_at: str,
    signer: Ed25519PrivateKey,
    trust: TrustStore,
    provenance: dict[str, Any],
    score_scale: ScoreScale | None = None,
    stage: Stage,
    run_id: int | None = None,
    binning: BinningTable | None = None,
    bins: BinningSpec | None = None,
    spans: dict[str, tuple[float, float]] | None = None,
    extra: Mapping[str, bytes] | None = None,
) -> ModelCard:
    """Write the artifact and sign it; `provenance` goes into the signed manifest (round,
    privacy settings, accepted update digests per round...). With `binning` (the binned
    scorecard) also the IV table and the points table; `bins`: the agreed bins a tree
    ensemble's codes come from and `spans` their training spans (gradient-boosted trees
    only); `extra`: more files the manifest covers (a checkpoint's coordinator state)."""
    out.mkdir(parents=True, exist_ok=True)
    wbytes = weights_bytes(state)
    pbytes = canonical_json(spec.model_dump(mode="json"))
    bbytes = None if bins is None else canonical_json(bins.model_dump(mode="json"))
    scale = score_scale or ScoreScale()
    card = ModelCard(
        architecture=architecture,
        score_scale=scale,
        data_schema=schema,
        institutions=institutions,
        training=training,
        metrics=metrics,
        weights_sha256=hashlib.sha256(wbytes).hexdigest(),
        preprocessing_sha256=hashlib.sha256(pbytes).hexdigest(),
        created_at=created_at,
        scorecard=None if binning is None else points_table(spec, state, scale),
        bins_sha256=None if bbytes is None else hashlib.sha256(bbytes).hexdigest(),
        spans=None if bins is None else spans,
    )
    files = [WEIGHTS, PREPROCESSING, CARD]
    (out / WEIGHTS).write_bytes(wbytes)
    (out / PREPROCESSING).write_bytes(pbytes)
    # Left out when absent, so other models' cards read as they always have.
    excluded = {k for k in ("scorecard", "bins_sha256", "spans") if getattr(card, k) is None}
    (out / CARD).write_bytes(canonical_json(card.model_dump(mode="json", exclude=excluded)))
    if binning is not None and card.scorecard is not None:
        (out / BINNING).write_bytes(canonical_json(binning.model_dump(mode="json")))
        (out / SCORECARD).write_text(card.scorecard.to_csv(), encoding="utf-8")
        files += [BINNING, SCORECARD]
    if bbytes is not None:
        (out / BINS).write_bytes(bbytes)
        files.append(BINS)
    for name, data in (extra or {}).items():
        (out / name).write_bytes(data)
        files.append(name)
    sign_directory(
        out,
        files,
        {
            **provenance,
            "kind": FORMAT,
            MANIFEST_STAGE: stage,
            **({} if run_id is None else {MANIFEST_RUN_ID: run_id}),
            "training": training,
            "metrics": metrics,
            "institutions": institutions,
            "created_at": created_at,
        },
        signer,
        trust,
    )
    return card


@dataclass(frozen=True)
class ScoringModel:
    """A loaded artifact: preprocessing + network + score scale (gradient-boosted trees:
    the bins, and a model that scores their codes)."""

    card: ModelCard
    spec: PreprocessingSpec
    model: nn.Module
    verified: Verified
    binning: BinningTable | None = None  # the binned scorecard's IV table
    bins: BinningSpec | None = None  # gradient-boosted trees: the agreed bins
    reference: Reference | None = None  # the training distribution (None: not recorded)

    @property
    def spans(self) -> dict[str, tuple[float, float]]:
        """Each numeric feature's recorded training span (the binned scorecard's, the
        trees'); empty for models and artifacts that record none."""
        if self.binning is not None:
            return dict(self.binning.spans)
        return dict(self.card.spans or {})

    @property
    def stage(self) -> str:
        """`final`, `checkpoint`, or `unknown` (an artifact from before stages were signed)."""
        return str(self.verified.manifest.get(MANIFEST_STAGE, "unknown"))

    @property
    def trained_round(self) -> int | None:
        value = self.verified.manifest.get("round")
        return value if isinstance(value, int) else None

    @property
    def run_id(self) -> int | None:
        return signed_run_id(self.verified.manifest)

    def describe(self) -> str:
        """What this artifact is, as the signed manifest says: for the line tools print."""
        run = "an unnamed run" if self.run_id is None else f"run {self.run_id}"
        if self.stage == FINAL:
            return f"the final model of {run} (round {self.trained_round})"
        if self.stage == CHECKPOINT:
            return f"a checkpoint of round {self.trained_round} of {run}, not its final model"
        return "a model whose signed manifest does not say whether it is a final model"

    def require_final(self, allow_checkpoint: bool) -> None:
        """Refuse anything but a final model unless the caller explicitly allows it."""
        if self.stage != FINAL and not allow_checkpoint:
            raise ArtifactError(
                f"this is {self.describe()}; serve, score and decide use only final models "
                "(--allow-checkpoint to use it anyway)"
            )

    def inputs(self, x: pd.DataFrame) -> np.ndarray:
        """What the model takes: the preprocessed design matrix, or the trees' bin codes."""
        return self.spec.transform(x) if self.bins is None else self.bins.codes(x)

    def inputs_record(self, record: Mapping[str, object]) -> np.ndarray:
        """`inputs` of one record (None: missing) as a (1, inputs) float32 row, without
        pandas (bin codes are small integers, exact in float32)."""
        row = (
            self.spec.transform_record(record)
            if self.bins is None
            else self.bins.codes_record(record)
        )
        return np.array([row], dtype=np.float32)

    def inputs_columns(self, columns: Mapping[str, Sequence[object]]) -> np.ndarray:
        """`inputs` of plain columns (None: missing), one per feature."""
        if self.bins is None:
            return self.spec.transform_columns(columns)
        return self.bins.codes(columns).astype(np.float32)

    def columns(self) -> list[FeatureColumns]:
        """Which model inputs each schema feature became, in the preprocessing's feature
        order: its preprocessed columns, or for trees its one bin code."""
        if self.bins is None:
            return feature_columns(self.spec)
        at = {name: j for j, name in enumerate(self.bins.names)}
        return [FeatureColumns(f.name, at[f.name], at[f.name] + 1) for f in self.spec.features]

    def predict_pd(self, x: pd.DataFrame) -> np.ndarray:
        return predict_pd(self.model, self.inputs(x))

    def score(self, x: pd.DataFrame) -> np.ndarray:
        return self.card.score_scale.score(self.predict_pd(x))


def verify_artifact(directory: Path, trust: TrustStore) -> Verified:
    """The coordinator's signature and every digest; raises ArtifactError naming the failure."""
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not a model directory")
    try:
        verified = verify_directory(directory, trust)
    except TrustError as exc:
        raise ArtifactError(str(exc)) from exc
    missing = {WEIGHTS, PREPROCESSING, CARD} - set(verified.manifest["files"])
    if missing:
        raise ArtifactError(f"{directory}: the signed manifest does not cover {sorted(missing)}")
    return verified


def load_artifact(directory: Path, trust: TrustStore) -> ScoringModel:
    """Verify, then load and cross-check a model directory (digests, shapes, architecture)."""
    verified = verify_artifact(directory, trust)
    try:
        card = ModelCard.model_validate_json(verified.contents[CARD])
    except ValueError as exc:
        raise ArtifactError(f"{directory / CARD}: invalid model card: {exc}") from exc
    if card.format != FORMAT:
        raise ArtifactError(f"{directory / CARD}: not a {FORMAT} artifact")
    wbytes, pbytes = verified.contents[WEIGHTS], verified.contents[PREPROCESSING]
    for name, data, expected in (
        (WEIGHTS, wbytes, card.weights_sha256),
        (PREPROCESSING, pbytes, card.preprocessing_sha256),
    ):
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ArtifactError(
                f"{directory / name}: SHA-256 {actual} does not match model.json ({expected})"
            )
    spec = PreprocessingSpec.model_validate_json(pbytes)
    bins = _bins(directory, verified, card)
    if bins is not None and sorted(bins.names) != sorted(f.name for f in spec.features):
        raise ArtifactError(
            f"{directory / BINS}: bins for {bins.names}, the preprocessing has "
            f"{[f.name for f in spec.features]}"
        )
    inputs = spec.n_outputs if bins is None else len(bins.features)
    if inputs != card.architecture.n_features:
        what = "preprocessing yields" if bins is None else "the bins code"
        raise ArtifactError(
            f"{directory}: {what} {inputs} features, "
            f"the model expects {card.architecture.n_features}"
        )
    with np.load(io.BytesIO(wbytes), allow_pickle=False) as npz:
        state = {k: npz[k].copy() for k in npz.files}
    try:
        model = learner(card.architecture.kind).from_state(card.architecture, state)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{directory / WEIGHTS}: weights do not fit the model: {exc}") from exc
    model.eval()
    return ScoringModel(
        card=card,
        spec=spec,
        model=model,
        verified=verified,
        binning=_binning(directory, card, verified),
        bins=bins,
        reference=_reference(directory, verified, spec),
    )


def _reference(directory: Path, verified: Verified, spec: PreprocessingSpec) -> Reference | None:
    """The signed reference distribution, when the artifact has one."""
    if REFERENCE not in verified.contents:
        return None
    try:
        reference = Reference.model_validate_json(verified.contents[REFERENCE])
    except ValueError as exc:
        raise ArtifactError(f"{directory / REFERENCE}: invalid reference: {exc}") from exc
    if sorted(reference.bins.names) != sorted(f.name for f in spec.features):
        raise ArtifactError(
            f"{directory / REFERENCE}: bins for {reference.bins.names}, the preprocessing has "
            f"{[f.name for f in spec.features]}"
        )
    return reference


def _binning(directory: Path, card: ModelCard, verified: Verified) -> BinningTable | None:
    """A binned scorecard's IV table; its points table must be the card's, both signed."""
    if card.scorecard is None:
        return None
    missing = {BINNING, SCORECARD} - set(verified.manifest["files"])
    if missing:
        raise ArtifactError(f"{directory}: the signed manifest does not cover {sorted(missing)}")
    if verified.contents[SCORECARD] != card.scorecard.to_csv().encode():
        raise ArtifactError(f"{directory / SCORECARD}: does not match the model card's points")
    try:
        return BinningTable.model_validate_json(verified.contents[BINNING])
    except ValueError as exc:
        raise ArtifactError(f"{directory / BINNING}: invalid binning table: {exc}") from exc


def _bins(directory: Path, verified: Verified, card: ModelCard) -> BinningSpec | None:
    """The signed bins of a tree ensemble (None for the other models)."""
    trees = learner(card.architecture.kind).exchange == "histograms"
    if not trees:
        return None
    if card.bins_sha256 is None or BINS not in verified.contents:
        raise ArtifactError(f"{directory}: a tree ensemble without its signed {BINS}")
    data = verified.contents[BINS]
    actual = hashlib.sha256(data).hexdigest()
    if actual != card.bins_sha256:
        raise ArtifactError(
            f"{directory / BINS}: SHA-256 {actual} does not match model.json ({card.bins_sha256})"
        )
    if _interim(data):
        raise ArtifactError(
            f"{directory / BINS}: bins in the retired interim format (levels, edges from the "
            "preprocessing's moments); this version reads the federation's agreed bins: "
            "train the model again"
        )
    try:
        return BinningSpec.model_validate_json(data)
    except ValueError as exc:
        raise ArtifactError(f"{directory / BINS}: invalid bins: {exc}") from exc


def _interim(data: bytes) -> bool:
    """Whether bins.json holds the trees' former stop-gap bins (every feature had `levels`,
    which the agreed bins never carry)."""
    try:
        features = json.loads(data).get("features")
    except (ValueError, AttributeError):
        return False
    return isinstance(features, list) and any(
        isinstance(f, dict) and "levels" in f for f in features
    )
