"""The model-validation report of a run (`jointcredit report`): one self-contained HTML page
(figures embedded as data URIs, no script, nothing fetched) and the same document in Markdown
with its figures beside it.

It reads only what a run writes: `metrics.json` (with the institutions' score-band counts from
the final evaluation for the curves, and the `fairness` block when the schema names protected
attributes), the signed model (verified here) and the trust store.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from jointcredit.federation.metrics import RunMetrics, ScoreHistogram
from jointcredit.federation.settings import RunSettings, SettingsError
from jointcredit.models.artifact import ArtifactError, ScoringModel, load_artifact
from jointcredit.models.gates import Run
from jointcredit.models.scorecard import ScoreScale
from jointcredit.simulations import report_figures as figures
from jointcredit.simulations.report_document import Figure, Section, Table, fmt
from jointcredit.simulations.report_trust import privacy_sections, provenance
from jointcredit.simulations.score_curves import curves, gains_table
from jointcredit.trust.errors import TrustError
from jointcredit.trust.store import TrustStore


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
    one_class = bool(hists) and any(
        sum(sum(getattr(h, side)) for h in hists.values()) == 0 for side in ("good", "bad")
    )
    if not hists or missing or one_class or len({tuple(h.edges) for h in hists.values()}) != 1:
        note = (
            "Not computable: the test splits hold one class only (curves need goods and bads)."
            if one_class and not missing
            else "Not recorded by this run: the final evaluation's score-band counts are "
            f"missing for {', '.join(missing) or 'every institution'} (runs before they were "
            "recorded)."
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
        *privacy_sections(m),
        provenance(m, model, trust if model else None, model_dir),
    ]
