"""The coordinator's part of `metrics.json` and of the signed manifests, from the verified
exchange records `InstitutionGrid` keeps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from flwr.app import MessageType

from jointcredit.federation import protocol
from jointcredit.federation.metrics import (
    Dropped,
    InstitutionResult,
    Rejection,
    RoundRecord,
    ScoreHistogram,
    Security,
)
from jointcredit.federation.protocol import HISTOGRAMS_TRAIN, EvaluateMetrics
from jointcredit.models.score_bands import band_edges
from jointcredit.models.scorecard import ScoreScale
from jointcredit.server.grid import Exchange, InstitutionGrid
from jointcredit.server.identity import CoordinatorIdentity
from jointcredit.server.privacy import round_epsilons, train_metrics
from jointcredit.server.verify import UpdateVerifier


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe: NaN (an undefined metric) becomes null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


def _nan_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _train_round(ex: Exchange, rec: RoundRecord) -> None:
    reported = train_metrics(ex)
    trained = {i: m for i, m in reported.items() if i in ex.metrics}
    total = sum(m.num_examples for m in trained.values())
    rec.train_loss = (
        sum((m.train_loss or 0.0) * m.num_examples for m in trained.values()) / total
        if total
        else None
    )
    rec.train_institutions = sorted(trained)
    if any(m.scaffold_own_control is not None for m in trained.values()):
        # SCAFFOLD: who corrected with a zero c_i (everyone in round 1; later, only a node
        # that lost its state).
        rec.scaffold_fresh_control = sorted(
            i for i, m in trained.items() if m.scaffold_own_control == 0.0
        )
    if ex.withheld:
        rec.withheld = sorted(ex.withheld)  # privacy budget spent: no update
    epsilons = round_epsilons(ex)
    if epsilons:
        rec.epsilon_per_institution = epsilons


def round_records(
    grid: InstitutionGrid,
    central: dict[int, dict[str, Any]],
    num_rounds: int,
    central_epsilon: dict[int, float],
) -> list[RoundRecord]:
    rounds: dict[int, RoundRecord] = {}
    for ex in grid.exchanges:
        if ex.server_round is None or ex.server_round > num_rounds:
            continue
        if ex.message_type not in (MessageType.TRAIN, MessageType.EVALUATE):
            continue
        rec = rounds.setdefault(
            ex.server_round, RoundRecord(round=ex.server_round, errors={}, rejected={}, dropped=[])
        )
        if ex.message_type == MessageType.TRAIN:
            _train_round(ex, rec)
        else:
            rec.per_institution_auc = {
                i: _nan_none(EvaluateMetrics.parse(m).auc) for i, m in ex.metrics.items()
            }
        record_dropped(rec, ex)
        rec.rejected = {
            **rec.rejected,
            **{f"{ex.message_type}:{i}": e for i, e in ex.rejected.items()},
        }
    for r, values in central.items():
        if r in rounds:
            rounds[r].central = values
    for r, eps in central_epsilon.items():
        if r in rounds:
            rounds[r].epsilon = eps  # institution-level DP, the federation's accountant
    return [rounds[r] for r in sorted(rounds)]


def record_dropped(rec: RoundRecord, ex: Exchange) -> None:
    """An exchange's error replies and missing or late replies, in the round's record."""
    rec.errors.update({f"{ex.message_type}:{i}": e for i, e in ex.errors.items()})
    rec.dropped = [
        *rec.dropped,
        *(
            Dropped(institution=i, exchange=ex.message_type, reason=e)
            for i, e in sorted(ex.errors.items())
        ),
    ]


def accepted_binning(
    grid: InstitutionGrid, secure: InstitutionGrid | None = None
) -> list[dict[str, Any]]:
    """The signed digest of each institution's binning replies (histogram, then bin counts;
    under secagg every stage reply of the two SecAgg+ sums, on their own grid), which the
    model's bins and WOE were computed from (for the signed manifest)."""
    kinds = (protocol.BIN_GRID_QUERY, protocol.BIN_COUNTS_QUERY)
    exchanges = (
        secure.exchanges
        if secure is not None
        else [ex for ex in grid.exchanges if ex.message_type in kinds]
    )
    return [
        {"message_type": ex.message_type, "accepted": dict(sorted(ex.accepted.items()))}
        for ex in exchanges
    ]


def accepted_updates(
    grid: InstitutionGrid, up_to: int, levels: InstitutionGrid | None = None
) -> list[dict[str, Any]]:
    """Per training round, the signed digest of each institution's aggregated update (for the
    signed manifest); for trees, per tree level, of each institution's histograms, or under
    secagg of each of its SecAgg+ stage replies for the level (`levels`: their own grid)."""
    if levels is not None:
        return [
            {"round": ex.server_round, "accepted": dict(sorted(ex.accepted.items()))}
            for ex in levels.exchanges
        ]
    return [
        {"round": ex.server_round, "accepted": dict(sorted(ex.accepted.items()))}
        for ex in grid.exchanges
        if ex.message_type == HISTOGRAMS_TRAIN
        or (
            ex.message_type == MessageType.TRAIN
            and ex.server_round is not None
            and ex.server_round <= up_to
        )
    ]


def security(
    grid: InstitutionGrid,
    verifier: UpdateVerifier,
    identity: CoordinatorIdentity,
    sum_grids: Sequence[InstitutionGrid | None] = (),
) -> Security:
    """`sum_grids`: the SecAgg+ grids of the binning rounds and the tree levels (their stage
    replies are verified by the same verifier, so they are itemised beside the main grid's)."""
    grids = [grid, *(g for g in sum_grids if g is not None)]
    rejections = [
        Rejection(
            round=ex.server_round,
            message_type=ex.message_type,
            institution=inst,
            reason=reason.split(":", 1)[0],
            detail=reason.split(":", 1)[-1].strip(),
        )
        for g in grids
        for ex in g.exchanges
        for inst, reason in sorted(ex.rejected.items())
    ]
    return Security(
        verified_replies=verifier.accepted,
        rejected_replies=len(rejections),
        rejected_by_reason=dict(sorted(verifier.rejected.items())),
        rejections=rejections,
        trust_store_sha256=identity.trust.digest(),
        coordinator_key_id=identity.trust.coordinator.key_id,
        signing_seconds=round(verifier.sign_seconds, 6),
        verification_seconds=round(verifier.verify_seconds, 6),
    )


def institution_results(final: Exchange, grid: InstitutionGrid) -> dict[str, InstitutionResult]:
    """Each institution's final evaluation on its own test split."""
    out: dict[str, InstitutionResult] = {}
    for inst, values in final.metrics.items():
        m = EvaluateMetrics.parse(values, f"evaluation of {inst}")
        result = InstitutionResult(
            auc=_nan_none(m.auc),
            ks=_nan_none(m.ks),
            brier=_nan_none(m.brier),
            auc_personalized=_nan_none(m.auc_personalized),
            n_test=m.num_examples,
            rejected_replies=sum(1 for ex in grid.exchanges if inst in ex.rejected),
        )
        if m.personalized_mu is not None:  # Ditto only
            result.personalized_mu = m.personalized_mu
        edges = band_edges(ScoreScale())
        bands = final.score_bands.get(inst)
        if (
            bands is not None
            and len(bands[0]) == len(bands[1]) == len(edges) - 1
            and min(*bands[0], *bands[1]) >= 0
            and sum(bands[0]) + sum(bands[1]) == m.num_examples
        ):  # counts that add up to the institution's test split, or none
            result.score_histogram = ScoreHistogram(edges=edges, good=bands[0], bad=bands[1])
        out[inst] = result
    return out
