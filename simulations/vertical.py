"""`jointcredit simulate --layout vertical`: a vertical federation in a Flower simulation, then
its baselines, into the same OUT contract as a horizontal run.

Every party's data is validated first. The run gets fresh keys (one per party and the
coordinator's, on a memory file system, gone when the run ends; `OUT/trust.json` keeps their
public half), runs `jointcredit.server.vertical_app` and `jointcredit.client.vertical_app` in
a staging directory beside OUT, and moves it into place only when everything succeeded.

Every node runs in one Ray actor (one actor asking for every CPU): a party's session (its
PSI scalar, the Paillier secret key, the label party's training thread) lives in the process
that handles its messages, and is never serialized to move between processes.

Baselines, on the rows the parties align (the simulation holds every party's rows; the
federation never does): `centralized` is the same learner on the joined rows with the same
bins (each party's, from its own aligned training rows: equal to `federated`, the lossless
property), `label_party_only` the same learner on the label party's own columns. For a schema
with protected attributes, `fairness` is the label party's figures as its `done` reply sent
them, and `fairness_baselines` the same figures of each baseline on the same held-out rows.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jointcredit.client.vertical_fairness import check_groups
from jointcredit.client.vertical_label import held_out_rows, own_bins, tree_params
from jointcredit.client.vertical_scorecard import classing as scorecard_classing
from jointcredit.data.vertical import VerticalData
from jointcredit.data.vertical_datasets import VERTICAL_DATASETS, load_vertical_dataset
from jointcredit.federation.vertical import TREE_KEYS, VerticalSettings
from jointcredit.federation.vertical_fairness import cutoffs
from jointcredit.models.fairness import centralized
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.trees import train as central_train
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.vertical.artifact import MODEL_DIR, load_vertical_model
from jointcredit.models.vertical.merge_maps import coarse_codes
from jointcredit.models.vertical.party_bins import joined_bins
from jointcredit.models.vertical.scorecard.artifact import load_vertical_scorecard
from jointcredit.models.vertical.scorecard.central import central_scorecard
from jointcredit.server.vertical_app import RESULT
from jointcredit.simulations.engine import (
    VERTICAL_CLIENT_APP,
    VERTICAL_SERVER_APP,
    run_simulation,
)
from jointcredit.simulations.guard import run_guard
from jointcredit.simulations.simulate import _publish, _staging
from jointcredit.trust.files import replace_file
from jointcredit.trust.keyset import TRUST_FILE, create_key_set
from jointcredit.trust.store import load_store

METRICS = "metrics.json"
# Paths and node counts are the run's own, not settings to report.
_RUN_ONLY = {"out-dir", "keys-dir", "trust-file", "parties", "timeout"}


def load_data(settings: VerticalSettings) -> VerticalData:
    schema = Path(settings.schema_file) if settings.schema_file else None
    return load_vertical_dataset(
        settings.dataset, schema=schema, seed=settings.seed, rows=settings.synthetic_rows
    )


def simulate_vertical(
    settings: VerticalSettings, out: Path, *, replace: bool = True, with_baselines: bool = True
) -> dict[str, Any]:
    """Run and write OUT (metrics.json, model/, trust.json); returns the metrics."""
    started = time.monotonic()
    data = load_data(settings)  # every party's rows validated before any node starts
    parties = list(data.schema.parties)
    if settings.split == "time":
        if data.schema.base.time is None:
            raise Refused(
                '--split time needs the schema\'s time column (time = "column", in the label '
                f"party's file); {settings.dataset} has none"
            )
        aligned_frames(data, settings)  # every aligned row at one time: refused here
    try:
        check_groups(data.label_party.groups, data.schema, settings)
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    staging = _staging(out, replace)
    try:
        run = settings.model_copy(
            update={"out_dir": str(staging), "parties": len(parties), "trust_file": ""}
        )
        with run_guard(with_keys=True) as keys_dir:
            assert keys_dir is not None
            name = f"simulation-{secrets.token_hex(6)}"
            create_key_set(keys_dir, parties, federation=name)
            shutil.copyfile(keys_dir / TRUST_FILE, staging / TRUST_FILE)
            run = run.model_copy(
                update={"keys_dir": str(keys_dir), "trust_file": str(staging / TRUST_FILE)}
            )
            run_simulation(
                run,
                num_nodes=len(parties),
                cpus_per_client=os.cpu_count() or 1,
                server_app=VERTICAL_SERVER_APP,
                client_app=VERTICAL_CLIENT_APP,
            )
        result_path = staging / RESULT
        if not result_path.is_file():
            raise RuntimeError("the vertical federation finished without its result")
        result = json.loads(result_path.read_bytes())
        result_path.unlink()
        # The model as a scorer would load it: every part verified against its party's key.
        trust = load_store(staging / TRUST_FILE)
        hidden = _RUN_ONLY | (TREE_KEYS if settings.model == "scorecard" else set())
        if settings.model == "scorecard":
            load_vertical_scorecard(staging / MODEL_DIR, trust)
        else:
            load_vertical_model(staging / MODEL_DIR, trust)
        metrics: dict[str, Any] = {
            "layout": "vertical",
            "dataset": settings.dataset,
            "federated": result["federated"],
            "centralized": None,
            "label_party_only": None,
            "vertical": result["vertical"],
            "config": {k: x for k, x in settings.to_run_config().items() if k not in hidden},
        }
        if "fairness" in result:  # the label party's figures, the horizontal run's key
            metrics["fairness"] = result["fairness"]
        if with_baselines:
            t = time.monotonic()
            learner = (
                scorecard_baseline_figures
                if settings.model == "scorecard"
                else tree_baseline_figures
            )
            metrics["centralized"], metrics["label_party_only"], fair = learner(data, settings)
            if fair is not None:
                metrics["fairness_baselines"] = fair
            metrics["vertical"]["baselines_seconds"] = round(time.monotonic() - t, 3)
        metrics["vertical"]["total_seconds"] = round(time.monotonic() - started, 3)
        replace_file(staging / METRICS, json.dumps(metrics, indent=2).encode(), mode=0o644)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metrics


def aligned_frames(
    data: VerticalData, settings: VerticalSettings
) -> tuple[dict[str, pd.DataFrame], np.ndarray]:
    """Every party's rows of the applicants all parties hold, in the label party's row order
    (as PSI aligns them), and which are test rows (as the label party draws them)."""
    schema = data.schema
    label = data.label_party.frame
    ids = label[schema.id]
    common = set(ids)
    for party, d in data.parties.items():
        if party != schema.label_party:
            common &= set(d.frame[schema.id])
    rows = np.flatnonzero(ids.isin(common).to_numpy())
    test = held_out_rows(label, schema, settings, rows)
    wanted = ids.iloc[rows].to_numpy()
    frames = {
        party: d.frame.set_index(schema.id).loc[wanted].reset_index()
        for party, d in data.parties.items()
    }
    return frames, test


Figures = dict[str, float]
# (`centralized`, `label_party_only`) metrics and, for protected attributes, their fairness.
Baselines = tuple[Figures, Figures, dict[str, Any] | None]


def baselines(data: VerticalData, settings: VerticalSettings) -> tuple[Figures, Figures]:
    """(`centralized`, `label_party_only`): the same learner on the joined aligned rows with
    every party's own bins, and on the label party's columns alone; on the same test rows."""
    joined, own, _ = tree_baseline_figures(data, settings)
    return joined, own


def baseline_fairness(
    data: VerticalData,
    settings: VerticalSettings,
    frames: dict[str, pd.DataFrame],
    test: np.ndarray,
    pds: dict[str, np.ndarray],
) -> dict[str, Any] | None:
    """The baselines' fairness figures on the same held-out rows as the label party's
    (`models.fairness.centralized`, the federated figures' one computation), by baseline."""
    schema, groups = data.schema, data.label_party.groups
    if groups is None or not schema.protected or not settings.fairness:
        return None
    label = data.label_party.frame
    # The aligned rows' positions in the label party's frame, in `frames`' order.
    at = pd.Series(np.arange(len(label)), index=label[schema.id].to_numpy())
    rows = at.loc[frames[schema.label_party][schema.id].to_numpy()].to_numpy()[test]
    y = frames[schema.label_party][schema.base.label].to_numpy()[test]
    cut = cutoffs(settings)
    held = groups.iloc[rows].reset_index(drop=True)
    return {
        name: centralized(pd_, y, held, schema.protected, cut).model_dump(mode="json")
        for name, pd_ in pds.items()
    }


def tree_baseline_figures(data: VerticalData, settings: VerticalSettings) -> Baselines:
    """`baselines`, and their fairness figures (`baseline_fairness`)."""
    frames, test = aligned_frames(data, settings)
    schema, label = data.schema, data.schema.label_party
    order = [label, *[p for p in schema.parties if p != label]]
    bins = [own_bins(frames[p][~test], schema, p, settings) for p in order]
    codes = np.hstack(
        [b.codes(frames[p]).astype(np.int64) for b, p in zip(bins, order, strict=True)]
    )
    y = frames[label][schema.base.label].to_numpy(dtype=np.float64)
    params = tree_params(settings)
    joined = central_train(codes[~test], y[~test], bin_layout(joined_bins(bins)), params)
    n_own = len(bins[0].names)
    own = central_train(codes[~test, :n_own], y[~test], bin_layout(bins[0]), params)

    def scores(pd_: np.ndarray) -> dict[str, float]:
        s = risk_metrics(y[test], pd_)
        return {k: float(x) for k, x in s.model_dump().items() if x is not None}

    pds = {
        "centralized": joined.predict_pd(codes[test]),
        "label_party_only": own.predict_pd(codes[test, :n_own]),
    }
    fair = baseline_fairness(data, settings, frames, test, pds)
    return scores(pds["centralized"]), scores(pds["label_party_only"]), fair


def scorecard_baselines(data: VerticalData, settings: VerticalSettings) -> tuple[Figures, Figures]:
    """The vertical scorecard's (`centralized`, `label_party_only`): its central equivalent on
    the joined aligned training rows with each party's own fine bins, and the same learner on
    the label party's columns alone; on the same test rows."""
    joined, own, _ = scorecard_baseline_figures(data, settings)
    return joined, own


def scorecard_baseline_figures(data: VerticalData, settings: VerticalSettings) -> Baselines:
    """`scorecard_baselines`, and their fairness figures (`baseline_fairness`)."""
    frames, test = aligned_frames(data, settings)
    schema, label = data.schema, data.schema.label_party
    others = [p for p in schema.parties if p != label]  # the feature parties' index order
    bank = frames[label]
    bank_tr = bank[~test].reset_index(drop=True)
    bank_fine = own_bins(bank_tr, schema, label, settings)
    platforms = []
    for other in others:
        plat_tr = frames[other][~test].reset_index(drop=True)
        platforms.append((plat_tr, own_bins(plat_tr, schema, other, settings)))
    y = bank[schema.base.label].to_numpy().astype(np.int64)
    kw: dict[str, Any] = {"classing": scorecard_classing(settings)}
    joined = central_scorecard((bank_tr, bank_fine), platforms, y[~test], schema.base, **kw)
    alone = central_scorecard((bank_tr, bank_fine), None, y[~test], schema.base, **kw)
    own_te = joined.own_codes(bank[test])
    fine_te = np.column_stack(
        [
            fine.codes(frames[o][test]).astype(np.int64)
            for o, (_, fine) in zip(others, platforms, strict=True)
        ]
    )
    coarse_te = coarse_codes(fine_te, [p.merge for p in joined.platform])  # as they answer
    no_platform = np.zeros((int(test.sum()), 0), dtype=np.int64)

    def pd_of(logit: np.ndarray) -> np.ndarray:
        out: np.ndarray = 1 / (1 + np.exp(-logit))
        return out

    def scores(pd_: np.ndarray) -> dict[str, float]:
        s = risk_metrics(y[test], pd_)
        return {k: float(x) for k, x in s.model_dump().items() if x is not None}

    pds = {
        "centralized": pd_of(joined.logit(own_te, coarse_te)),
        "label_party_only": pd_of(alone.logit(alone.own_codes(bank[test]), no_platform)),
    }
    fair = baseline_fairness(data, settings, frames, test, pds)
    return scores(pds["centralized"]), scores(pds["label_party_only"]), fair


class Refused(ValueError):
    """A run the settings allow that this layout cannot do: the caller's error (exit 2)."""


def known_dataset(dataset: str) -> bool:
    return dataset in VERTICAL_DATASETS or Path(dataset).is_dir()
