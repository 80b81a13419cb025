"""The model-validation report of a run (`jointcredit report`): one self-contained HTML page
(figures embedded as data URIs, no script, nothing fetched) and the same document in Markdown
with its figures beside it.

It reads only what a run writes: `metrics.json` (with the institutions' score-band counts from
the final evaluation for the curves, and the `fairness` block when the schema names protected
attributes), the signed model (verified here) and the trust store.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from jointcredit.federation.metrics import RunMetrics, ScoreHistogram
from jointcredit.federation.settings import RunSettings, SettingsError
from jointcredit.models.artifact import ArtifactError, ScoringModel, load_artifact
from jointcredit.models.gates import Run
from jointcredit.models.promotion import read_promotion
from jointcredit.models.scorecard import ScoreScale
from jointcredit.simulations import report_figures as figures
from jointcredit.simulations.report_document import Figure, Section, Table
from jointcredit.simulations.score_curves import curves, gains_table
from jointcredit.trust.errors import TrustError
from jointcredit.trust.store import TrustStore


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "inf" if math.isinf(value) else ("-" if math.isnan(value) else f"{value:.{digits}f}")
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v, digits)}" for k, v in value.items())
    return str(value)


def _gini(auc: float | None) -> float | None:
    return None if auc is None else 2 * auc - 1


def _summary(m: RunMetrics, model: ScoringModel | None, problem: str | None) -> Section:
    s = Section("Summary")
    kind = model.card.architecture.kind if model else "unverified"
    s.blocks.append(
        f"Run {m.run_id}: {kind} model trained by {len(m.institutions)} institutions over "
        f"{m.trained_rounds} rounds on {m.dataset or 'their own data'}. "
        + (
            f"The signed model verifies: {model.describe()}."
            if model
            else f"The signed model does NOT verify: {problem}."
        )
    )
    rows = [
        [
            "federated",
            fmt(m.federated.auc),
            fmt(_gini(m.federated.auc)),
            fmt(m.federated.ks),
            fmt(m.federated.brier),
            m.federated.evaluated_on,
        ]
    ]
    if m.centralized is not None:
        c = m.centralized
        rows.append(
            [
                "centralized (pooled rows)",
                fmt(c.auc),
                fmt(_gini(c.auc)),
                fmt(c.ks),
                fmt(c.brier),
                "pooled test split (simulation only)",
            ]
        )
    if m.local_only is not None:
        lo = m.local_only
        rows.append(
            [
                "local only (mean)",
                fmt(lo.mean_auc),
                fmt(_gini(lo.mean_auc)),
                fmt(lo.mean_ks),
                fmt(lo.mean_brier),
                "pooled test split",
            ]
        )
    s.blocks.append(Table(["model", "AUC", "Gini", "KS", "Brier", "evaluated on"], rows))
    return s


def _data(m: RunMetrics) -> Section:
    s = Section("Data and split")
    try:
        settings: RunSettings | None = RunSettings.from_run_config(m.config)
    except (SettingsError, ValueError):
        settings = None
    if settings is not None:
        split = (
            "out-of-time: each institution's latest applications are its test split"
            if settings.split != "random"
            else f"random, stratified by label: {settings.test_fraction:.0%} of each "
            "institution's rows held out for test"
        )
        s.blocks.append(
            f"Dataset: {m.dataset or settings.dataset}. Split: {split} "
            f"(`{settings.split}`), seed {settings.seed}."
        )
    rows = [[i, str(r.n_test)] for i, r in sorted(m.per_institution.items())]
    s.blocks.append(Table(["institution", "test rows"], rows))
    return s


def _histograms(m: RunMetrics) -> dict[str, ScoreHistogram]:
    return {i: r.score_histogram for i, r in m.per_institution.items() if r.score_histogram}


def _curves_sections(m: RunMetrics, scale: ScoreScale) -> list[Section]:
    disc, cal, dist = (
        Section("Discrimination"),
        Section("Calibration"),
        Section("Score distribution per institution"),
    )
    hists = _histograms(m)
    missing = sorted(set(m.per_institution) - set(hists))
    if not hists or missing or len({tuple(h.edges) for h in hists.values()}) != 1:
        note = (
            "Not recorded by this run: the final evaluation's score-band counts are missing "
            f"for {', '.join(missing) or 'every institution'} (runs before they were recorded)."
        )
        for sec in (disc, cal, dist):
            sec.blocks.append(note)
        disc.blocks.append(
            f"Headline: AUC {fmt(m.federated.auc)}, Gini "
            f"{fmt(_gini(m.federated.auc))}, KS {fmt(m.federated.ks)}."
        )
        cal.blocks.append(f"Brier score {fmt(m.federated.brier)}.")
        return [disc, cal, dist]
    edges = np.asarray(next(iter(hists.values())).edges)
    good = np.sum([h.good for h in hists.values()], axis=0)
    bad = np.sum([h.bad for h in hists.values()], axis=0)
    c = curves(edges, good, bad)
    disc.blocks.append(
        f"From the institutions' score-band counts ({len(edges) - 1} bands of the "
        f"{scale.min_score}-{scale.max_score} scale, {int(good.sum() + bad.sum())} test "
        f"applicants, {int(bad.sum())} bad), summed over institutions: AUC {c.auc:.4f}, Gini "
        f"{c.gini:.4f}, KS {c.ks:.4f} at score {c.ks_at:g} (rows in one band count as ties). "
        f"Headline on {m.federated.evaluated_on}: AUC {fmt(m.federated.auc)}, KS "
        f"{fmt(m.federated.ks)}."
    )
    disc.blocks.append(Figure("roc", "ROC curve", figures.roc(c)))
    disc.blocks.append(Figure("ks", "KS curve", figures.ks(c)))
    disc.blocks.append("Gains table (riskiest scores first; groups of whole score bands):")
    disc.blocks.append(
        Table(
            [
                "group",
                "scores",
                "applicants",
                "bads",
                "bad rate",
                "cumulative share",
                "bads captured",
                "lift",
            ],
            [
                [
                    str(r.group),
                    f"{r.score_from:g}-{r.score_to:g}",
                    str(r.applicants),
                    str(r.bads),
                    fmt(r.bad_rate, 3),
                    fmt(r.cumulative_share, 3),
                    fmt(r.cumulative_bad_capture, 3),
                    fmt(r.lift, 2),
                ]
                for r in gains_table(edges, good, bad)
            ],
        )
    )
    predicted = np.array([scale.pd_at((a + b) / 2) for a, b in itertools.pairwise(edges)])
    cal.blocks.append(
        f"Observed bad rate per score band against the PD the band's scores stand for (score "
        f"{scale.base_score:g} at odds {scale.base_odds:g}:1, {scale.pdo:g} points to double the "
        f"odds); Brier score {fmt(m.federated.brier)}."
    )
    cal.blocks.append(
        Figure("calibration", "Calibration", figures.calibration(edges, good, bad, predicted))
    )
    per = {i: (np.asarray(h.good), np.asarray(h.bad)) for i, h in hists.items()}
    dist.blocks.append(
        Figure(
            "scores", "Score distribution per institution", figures.score_distributions(edges, per)
        )
    )
    dist.blocks.append(
        Table(
            ["institution", "applicants", "bads", "mean score"],
            [
                [
                    i,
                    str(sum(h.good) + sum(h.bad)),
                    str(sum(h.bad)),
                    fmt(_mean_score(h), 1),
                ]
                for i, h in sorted(hists.items())
            ],
        )
    )
    return [disc, cal, dist]


def _mean_score(h: ScoreHistogram) -> float | None:
    n = np.asarray(h.good) + np.asarray(h.bad)
    if n.sum() == 0:
        return None
    mid = (np.asarray(h.edges[:-1]) + np.asarray(h.edges[1:])) / 2
    return float((mid * n).sum() / n.sum())


def _institutions(m: RunMetrics) -> Section:
    s = Section("Per-institution AUC")
    local = m.local_only.per_institution if m.local_only else {}
    rows: dict[str, dict[str, float | None]] = {}
    table = []
    for i, r in sorted(m.per_institution.items()):
        own = (
            r.auc_local_only
            if r.auc_local_only is not None
            else (local[i].auc_own if i in local else None)
        )
        rows[i] = {"global": r.auc, "personalised": r.auc_personalized, "local only": own}
        table.append([i, fmt(r.auc), fmt(r.auc_personalized), fmt(own), fmt(r.ks), str(r.n_test)])
    s.blocks.append(
        "Each institution's own test split: the federated (global) model, its personalised "
        f"copy ({m.personalization.method or 'no personalisation'}), and a model trained on the "
        "institution's rows alone (simulation only)."
    )
    s.blocks.append(
        Table(
            ["institution", "global", "personalised", "local only", "KS (global)", "test rows"],
            table,
        )
    )
    if rows:
        s.blocks.append(
            Figure("institutions", "Per-institution AUC", figures.institution_aucs(rows))
        )
    return s


FAIRNESS_KEYS = (
    "adverse_impact_ratio",
    "demographic_parity_difference",
    "equal_opportunity_difference",
    "auc_by_group",
    "calibration_by_group",
)


def _fairness(block: dict[str, Any] | None) -> Section:
    s = Section("Fairness per group")
    attributes = list((block or {}).get("attributes") or [])
    if not block or not attributes:
        s.blocks.append("Not measured: the schema names no protected attribute.")
        return s
    s.blocks.append(
        "Computed from the institutions' per-group counts, summed by the coordinator. Adverse "
        "impact ratio: each group's approval rate over the most-approved group's (the 4/5 rule "
        "flags values below 0.8)."
    )
    for attribute in attributes:
        keys = [
            k for k in FAIRNESS_KEYS if isinstance(block.get(k), dict) and attribute in block[k]
        ]
        groups = list((block.get("groups") or {}).get(attribute) or [])
        for k in keys:
            values = block[k][attribute]
            for g in values if isinstance(values, dict) else ():
                if g not in groups:
                    groups.append(g)
        rows = []
        for g in groups:
            row = [str(g)]
            for k in keys:
                values = block[k][attribute]
                row.append(fmt(values.get(g) if isinstance(values, dict) else values, 3))
            rows.append(row)
        s.blocks.append(f"Protected attribute `{attribute}`:")
        s.blocks.append(Table(["group", *(k.replace("_", " ") for k in keys)], rows))
    return s


def _privacy(m: RunMetrics) -> list[Section]:
    p = m.privacy
    s = Section("Privacy settings and epsilon spent")
    rows = [
        ["setting", p.setting],
        ["epsilon budget", fmt(p.epsilon)],
        ["delta", fmt(p.delta, 8)],
        [
            "epsilon spent",
            fmt(p.epsilon_spent)
            if p.epsilon_spent is not None
            else "- (no differential privacy: unbounded)"
            if p.setting in ("none", "secagg")
            else "-",
        ],
        ["aggregation rule", p.aggregator],
        ["simulated attack", f"{p.attack.kind} {', '.join(p.attack.attackers)}".strip()],
    ]
    if p.record_dp is not None:
        rows.append(
            [
                "record-level DP",
                f"{p.record_dp.mechanism}, clip {p.record_dp.max_grad_norm:g}; "
                f"{p.record_dp.covers}",
            ]
        )
    if p.institution_dp is not None:
        rows.append(
            [
                "institution-level DP",
                f"{p.institution_dp.mechanism} ({p.institution_dp.clipping} "
                f"clipping {p.institution_dp.clipping_norm:g}); {p.institution_dp.covers}",
            ]
        )
    if p.secagg is not None:
        rows.append(
            [
                "secure aggregation",
                f"SecAgg+, {p.secagg.num_shares} shares, threshold "
                f"{p.secagg.reconstruction_threshold}",
            ]
        )
    if p.stopped is not None:
        rows.append(["stopped", f"after round {p.stopped.after_round}: {p.stopped.reason}"])
    s.blocks.append(Table(["", "value"], rows))
    if p.epsilon_per_institution:
        s.blocks.append(
            Table(
                ["institution", "epsilon spent"],
                [[i, fmt(e)] for i, e in sorted(p.epsilon_per_institution.items())],
            )
        )
    mia = Section("Membership-inference audit")
    if p.mia is None:
        mia.blocks.append("Not run (the audit needs every row: simulation only).")
    else:
        mia.blocks.append(
            f"Members: {p.mia.members}; non-members: {p.mia.nonmembers}. Headline "
            f"({p.mia.headline}): AUC {fmt(p.mia_auc)}, TPR at 1% FPR {fmt(p.mia_tpr_at_1pct_fpr)} "
            "(0.5 and 0.01: the attacker does no better than chance)."
        )
        cols = sorted({k for a in p.mia.attacks for k in a}, key=lambda k: (k != "attack", k))
        mia.blocks.append(Table(cols, [[fmt(a.get(c)) for c in cols] for a in p.mia.attacks]))
    return [s, mia]


def _provenance(
    m: RunMetrics, model: ScoringModel | None, trust: TrustStore | None, model_dir: Path
) -> Section:
    s = Section("Signed provenance")
    if model is None or trust is None:
        s.blocks.append("The model did not verify: no provenance can be vouched for.")
        return s
    man = model.verified.manifest
    s.blocks.append(
        f"Manifest SHA-256 {model.verified.manifest_sha256}, signed by coordinator key "
        f"{model.verified.key_id} of federation `{trust.federation}` (trust store "
        f"{man.get('trust_store_sha256')}). Replies verified: {m.security.verified_replies}; "
        f"rejected: {m.security.rejected_replies} ({fmt(m.security.rejected_by_reason) or 'none'})."
    )
    updates: list[dict[str, Any]] = man.get("updates", [])
    counted: dict[str, int] = {}
    for u in updates:
        for inst in u.get("accepted", {}):
            counted[inst] = counted.get(inst, 0) + 1
    rows = []
    for inst in sorted(set(trust.institutions) | set(counted)):
        entries = trust.institutions.get(inst, [])
        key_ids = ", ".join(e.key_id + (" (revoked)" if e.revoked else "") for e in entries) or "-"
        rows.append([inst, key_ids, str(counted.get(inst, 0))])
    s.blocks.append(Table(["institution", "signing key", "signed updates in the model"], rows))
    if updates:
        s.blocks.append("Each round's aggregated updates, by the institutions that signed them:")
        s.blocks.append(
            Table(
                ["round", "signed updates aggregated"],
                [[str(u.get("round")), ", ".join(sorted(u.get("accepted", {})))] for u in updates],
            )
        )
    try:
        promo = read_promotion(model_dir, trust, model.verified.manifest_sha256)
        s.blocks.append(
            f"Promoted {promo.record.get('promoted_at')} by key {promo.key_id} "
            f"{promo.record.get('promoted_by') or ''} under gates "
            f"{promo.record.get('gates_sha256')}."
        )
    except TrustError as exc:
        s.blocks.append(f"Not promoted: {exc}")
    return s


def build(run: Run, model_dir: Path, trust: TrustStore | None) -> list[Section]:
    m = run.metrics
    model: ScoringModel | None = None
    problem = None
    if trust is None:
        problem = "no verified trust store"
    else:
        try:
            model = load_artifact(model_dir, trust)
        except (ArtifactError, TrustError) as exc:
            problem = str(exc)
    scale = model.card.score_scale if model else ScoreScale()
    return [
        _summary(m, model, problem),
        _data(m),
        *_curves_sections(m, scale),
        _institutions(m),
        _fairness(run.fairness),
        *_privacy(m),
        _provenance(m, model, trust if model else None, model_dir),
    ]
