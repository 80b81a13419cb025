"""The coordinator's ServerApp: agree preprocessing, run the strategy, write the artifact.

    1. wait for the institution nodes, agree preprocessing from their summaries (query round);
    2. FedAvg, FedProx or FedAvgM - or a robust rule: FedMedian, FedTrimmedAvg, Krum, MultiKrum,
       Bulyan (Flower strategies) - for `rounds` rounds, federated evaluation
       each round and, in simulation, central evaluation on the pooled test split; a signed
       checkpoint per round;
    3. one last evaluate round where each institution also personalises a copy (hierarchical
       prior: a `query.prior` round first, `server.personalization`);
    4. write the signed OUT/model/, OUT/trust.json and OUT/metrics.json.
Replies pass through `InstitutionGrid`, which verifies each reply's signature before any
strategy sees it and orders replies so a seeded run is reproducible.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    MetricRecordValues,
    RecordDict,
)
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.exception import PrivacyBudgetExhausted

from jointcredit.data.catalog import load_institution
from jointcredit.data.frames import Split
from jointcredit.models.artifact import save_artifact
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.nets import architecture, build_model
from jointcredit.models.personalize import PRIOR, PRIOR_COUNT
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.settings import RunSettings
from jointcredit.models.training import predict_pd
from jointcredit.server import events
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import BudgetSpent, InstitutionGrid, metric_rows, nan_weighted_mean
from jointcredit.server.identity import (
    CoordinatorIdentity,
    coordinator_identity,
    discard_generated,
)
from jointcredit.server.personalization import federation_prior
from jointcredit.server.preprocessing import agree_preprocessing, wait_for_nodes
from jointcredit.server.privacy import privacy_record, round_epsilons
from jointcredit.server.secagg import run_secagg
from jointcredit.server.strategy import build_strategy, robustness_record
from jointcredit.server.verify import UpdateVerifier

app = ServerApp()


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe: NaN (undefined metric) becomes null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


def _central_evaluator(
    settings: RunSettings, institutions: list[str], spec: PreprocessingSpec
) -> tuple[Split, np.ndarray] | None:
    """Simulation only: the union of the participating institutions' test splits.

    A real coordinator holds no rows; this exists because a simulation holds all of them and
    researchers want the pooled view. Off with `central-eval=false` (deployment).
    """
    if not settings.central_eval:
        return None
    try:
        parts = [load_institution(settings.data, inst).test for inst in institutions]
    except Exception as exc:  # no data on this machine: say so and go on without it
        log(WARNING, "Central evaluation disabled: %s", exc)
        return None
    pooled = Split(
        x=pd.concat([p.x for p in parts], ignore_index=True), y=np.concatenate([p.y for p in parts])
    )
    return pooled, spec.transform(pooled.x)


def _round_records(
    grid: InstitutionGrid,
    central: dict[int, dict[str, Any]],
    num_rounds: int,
    central_epsilon: dict[int, float],
) -> list[dict[str, Any]]:
    rounds: dict[int, dict[str, Any]] = {}
    for ex in grid.exchanges:
        if ex.server_round is None or ex.server_round > num_rounds:
            continue
        if ex.message_type not in (
            MessageType.TRAIN,
            MessageType.EVALUATE,
        ):
            continue
        rec = rounds.setdefault(ex.server_round, {"round": ex.server_round, "errors": {}})
        if ex.message_type == MessageType.TRAIN:
            losses = {i: m["train-loss"] for i, m in ex.metrics.items()}
            weights = {i: m["num-examples"] for i, m in ex.metrics.items()}
            total = sum(weights.values())
            rec["train_loss"] = (
                sum(losses[i] * weights[i] for i in losses) / total if total else None
            )
            rec["train_institutions"] = sorted(ex.metrics)
            if any("scaffold-own-control" in m for m in ex.metrics.values()):
                # SCAFFOLD: who corrected with a zero c_i (everyone in round 1; later, only a
                # node that lost its state).
                rec["scaffold_fresh_control"] = sorted(
                    i for i, m in ex.metrics.items() if m.get("scaffold-own-control") == 0.0
                )
            if ex.withheld:
                rec["withheld"] = sorted(ex.withheld)  # privacy budget spent: no update
            epsilons = round_epsilons(ex)
            if epsilons:
                rec["epsilon_per_institution"] = epsilons
        else:
            rec["per_institution_auc"] = _clean(
                {i: m.get("auc", math.nan) for i, m in ex.metrics.items()}
            )
        rec["errors"].update({f"{ex.message_type}:{i}": e for i, e in ex.errors.items()})
        rec.setdefault("rejected", {}).update(
            {f"{ex.message_type}:{i}": e for i, e in ex.rejected.items()}
        )
    for r, values in central.items():
        if r in rounds:
            rounds[r]["central"] = values
    for r, eps in central_epsilon.items():
        if r in rounds:
            rounds[r]["epsilon"] = eps  # institution-level DP, the federation's accountant
    return [rounds[r] for r in sorted(rounds)]


def _accepted_updates(grid: InstitutionGrid, up_to: int) -> list[dict[str, Any]]:
    """Per training round, the signed digest of each institution's aggregated update."""
    return [
        {"round": ex.server_round, "accepted": dict(sorted(ex.accepted.items()))}
        for ex in grid.exchanges
        if ex.message_type == MessageType.TRAIN
        and ex.server_round is not None
        and ex.server_round <= up_to
    ]


def _security(
    grid: InstitutionGrid, verifier: UpdateVerifier, identity: CoordinatorIdentity
) -> dict[str, Any]:
    rejections = [
        {
            "round": ex.server_round,
            "message_type": ex.message_type,
            "institution": inst,
            "reason": reason.split(":", 1)[0],
            "detail": reason.split(":", 1)[-1].strip(),
        }
        for ex in grid.exchanges
        for inst, reason in sorted(ex.rejected.items())
    ]
    return {
        "verified_replies": verifier.accepted,
        "rejected_replies": len(rejections),
        "rejected_by_reason": dict(sorted(verifier.rejected.items())),
        "rejections": rejections,
        "trust_store_sha256": identity.trust.digest(),
        "coordinator_key_id": identity.trust.coordinator.key_id,
        "signing_seconds": round(verifier.sign_seconds, 6),
        "verification_seconds": round(verifier.verify_seconds, 6),
    }


def _aggregate_evaluate_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    # Undefined metrics (one-class test split) arrive as NaN; skip them instead of poisoning.
    mean: dict[str, MetricRecordValues] = dict(nan_weighted_mean(metric_rows(records), weight_key))
    return MetricRecord(mean)


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = RunSettings.from_run_config(context.run_config)
    identity = coordinator_identity(settings, context.run_id)
    try:
        _run(grid, context, settings, identity)
    finally:
        discard_generated(identity)  # simulation keys made for this run only


def _run(
    grid: Grid, context: Context, settings: RunSettings, identity: CoordinatorIdentity
) -> None:
    started = time.monotonic()
    verifier = UpdateVerifier(identity.trust, run_id=context.run_id)
    client_clipped = settings.privacy == "dp-institution" and settings.dp_clipping == "client"
    igrid = InstitutionGrid(
        grid,
        verifier,
        settings.min_valid_fraction,
        update_bound=settings.clipping_norm if client_clipped else None,
    )
    out_dir = settings.run_dir(context.run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "trust.json").write_bytes(identity.trust.to_bytes())

    # 1. Institutions and the agreed preprocessing.
    events.emit(events.ServerEvent("preprocessing", total_rounds=settings.rounds))
    nodes = wait_for_nodes(igrid, settings.min_nodes, timeout=settings.round_timeout)
    spec, schema, node_inst, summaries = agree_preprocessing(igrid, nodes, settings)
    institutions = sorted(node_inst.values())
    log(INFO, "Institutions: %s", ", ".join(institutions))
    privacy: dict[str, Any] = {
        **privacy_record(settings, [], institutions),
        **robustness_record(settings, institutions),
    }

    arch = architecture(settings.model, spec.n_outputs)
    initial = build_model(arch, seed=settings.seed)
    central = _central_evaluator(settings, institutions, spec)
    central_by_round: dict[int, dict[str, Any]] = {}
    latest: dict[int, ArrayRecord] = {}  # the last aggregated global model, by round
    central_epsilon: dict[int, float] = {}  # institution-level DP: epsilon after each round
    round_started = [time.monotonic()]
    round_seconds: list[float] = []

    def signed_artifact(
        path: Path, arrays: ArrayRecord, server_round: int, metrics: dict[str, Any]
    ) -> None:
        save_artifact(
            path,
            state={k: v.numpy() for k, v in arrays.to_torch_state_dict().items()},
            spec=spec,
            architecture=arch,
            schema=schema,
            institutions=institutions,
            training=settings.to_run_config(),
            metrics=metrics,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            signer=identity.key,
            trust=identity.trust,
            provenance={
                "round": server_round,
                "privacy": privacy,
                "updates": _accepted_updates(igrid, server_round),
            },
        )

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        # Also the per-round progress hook: Flower calls it after every round.
        values: dict[str, Any] = {}
        latest.clear()
        latest[server_round] = arrays
        spent = getattr(strategy, "privacy_spent", lambda: None)()
        if spent is not None and server_round > 0:
            central_epsilon[server_round] = float(spent.epsilon)
        if central is not None:
            model = build_model(arch)
            model.load_state_dict(arrays.to_torch_state_dict(), strict=True)
            pooled, x = central
            values = risk_metrics(pooled.y, predict_pd(model, x))
            central_by_round[server_round] = values
        if server_round > 0:
            seconds = time.monotonic() - round_started[0]
            round_seconds.append(seconds)
            if settings.checkpoints:
                signed_artifact(
                    out_dir / "checkpoints" / f"round-{server_round:03d}",
                    arrays,
                    server_round,
                    {"central": _clean(values)},
                )
            events.emit(
                events.ServerEvent(
                    "round", server_round, settings.rounds, {**values, "seconds": seconds}
                )
            )
            round_started[0] = time.monotonic()
        defined: dict[str, MetricRecordValues] = {
            k: float(v) for k, v in values.items() if v is not None
        }
        return MetricRecord(defined) if defined else None

    # 2. Federated training with a Flower strategy.
    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": len(nodes),
        "min_evaluate_nodes": len(nodes),
        "min_available_nodes": len(nodes),
        "evaluate_metrics_aggr_fn": _aggregate_evaluate_metrics,
    }
    strategy = (
        None if settings.privacy == "secagg" else build_strategy(settings, len(nodes), common)
    )
    train_config = ConfigRecord({"preprocessing": spec.to_json()})
    training_started = time.monotonic()
    stopped: dict[str, Any] | None = None
    secagg: dict[str, Any] | None = None
    try:
        if strategy is None:
            final_arrays, secagg = run_secagg(
                igrid,
                context,
                settings,
                initial=ArrayRecord(initial.state_dict()),
                train_config={"preprocessing": spec.to_json()},
                n_nodes=len(nodes),
                max_examples=max(s.rows for s in summaries),
                evaluate_fn=evaluate_fn,
            )
        else:
            final_arrays = strategy.start(
                grid=igrid,
                initial_arrays=ArrayRecord(initial.state_dict()),
                num_rounds=settings.rounds,
                timeout=settings.round_timeout,
                train_config=train_config,
                evaluate_config=ConfigRecord({"preprocessing": spec.to_json()}),
                evaluate_fn=evaluate_fn,
            ).arrays
        last_round = settings.rounds
    except (BudgetSpent, PrivacyBudgetExhausted) as exc:
        # An enforced budget: nobody may train (record-level) or no further aggregate may be
        # released (institution-level). The model stands as it was after the last round that
        # trained; the run says so and goes on to its outputs.
        ((last_round, final_arrays),) = latest.items()
        stopped = {"after_round": last_round, "reason": str(exc)}
        log(WARNING, "Training stopped after round %s: %s", last_round, exc)
    trained_rounds = {
        e.server_round
        for e in igrid.exchanges
        if e.message_type == MessageType.TRAIN and e.server_round is not None
    }
    # A stopped run may have asked for one more round (record-level: everyone withheld).
    expected = set(range(1, last_round + 1))
    if not expected <= trained_rounds <= expected | ({last_round + 1} if stopped else set()):
        raise FederationError(f"training rounds missing: ran {sorted(trained_rounds)}")
    privacy.update(
        privacy_record(settings, igrid.exchanges, institutions, strategy, central_epsilon)
    )
    if secagg is not None:
        privacy["secagg"] = secagg
    if stopped is not None:
        privacy["stopped"] = stopped

    # 3. Personalisation: each institution fine-tunes a copy of the final model on its own rows.
    personalization_started = time.monotonic()
    events.emit(events.ServerEvent("personalization", settings.rounds, settings.rounds))
    config = ConfigRecord(
        {
            "preprocessing": spec.to_json(),
            "finetune-epochs": settings.finetune_epochs,
            "server-round": settings.rounds + 1,
        }
    )
    final_content: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
        "arrays": final_arrays,
        "config": config,
    }
    personalization: dict[str, Any] = {"method": settings.personalization_method}
    in_prior: set[str] = set()
    prior_sum: ArrayRecord | None = None
    if settings.personalization_method == "hierarchical":
        shapes = {n: tuple(p.shape) for n, p in initial.named_parameters()}
        query_config = ConfigRecord({"preprocessing": spec.to_json()})
        prior = federation_prior(igrid, nodes, final_arrays, shapes, query_config, settings)
        if prior is None:
            personalization["method"] = "ditto"
        else:
            prior_sum, in_prior = prior[0], set(prior[1])
            config[PRIOR_COUNT] = len(in_prior)
            personalization["prior_institutions"] = prior[1]
            personalization["ditto_institutions"] = sorted(set(institutions) - in_prior)
    # Only an institution whose deviation is in the sum gets it (it subtracts its own);
    # one whose prior reply failed or was rejected personalises with Ditto.
    final_msgs = [
        Message(
            RecordDict(
                {**final_content, PRIOR: prior_sum}
                if prior_sum is not None and node_inst.get(n) in in_prior
                else final_content
            ),
            dst_node_id=n,
            message_type=MessageType.EVALUATE,
        )
        for n in nodes
    ]
    list(igrid.send_and_receive(final_msgs, timeout=settings.round_timeout))
    final = igrid.exchanges[-1]

    # 4. Outputs.
    phases = {
        "setup_seconds": round(training_started - started, 3),
        "training_seconds": round(personalization_started - training_started, 3),
        "personalization_seconds": round(time.monotonic() - personalization_started, 3),
    }
    per_institution = {
        inst: _clean(
            {
                "auc": m.get("auc"),
                "ks": m.get("ks"),
                "brier": m.get("brier"),
                "auc_personalized": m.get("auc-personalized"),
                "n_test": int(m["num-examples"]),
                # Ditto only: the strength chosen on own validation rows (-1: the global model).
                **({"personalized_mu": m["personalized-mu"]} if "personalized-mu" in m else {}),
            }
        )
        for inst, m in final.metrics.items()
    }
    fed_eval = _clean(nan_weighted_mean(list(final.metrics.values()), "num-examples"))
    headline = central_by_round.get(last_round) or {
        k: fed_eval.get(k) for k in ("auc", "ks", "brier")
    }
    metrics: dict[str, Any] = {
        "run_id": context.run_id,
        "config": settings.to_run_config(),
        "institutions": institutions,
        "preprocessing": {"n_features": spec.n_outputs, "sha256": spec.digest()},
        "federated": {
            **{k: headline.get(k) for k in ("auc", "ks", "brier")},
            "evaluated_on": "pooled test split"
            if central is not None
            else "institutions (weighted)",
        },
        "federated_eval": fed_eval,
        "per_institution": per_institution,
        "personalization": personalization,
        "rounds": _round_records(igrid, central_by_round, settings.rounds, central_epsilon),
        "trained_rounds": last_round,
        "security": _security(igrid, verifier, identity),
        "privacy": privacy,
        "timing": {
            "server_seconds": round(time.monotonic() - started, 3),
            **phases,
            "round_seconds": [round(s, 3) for s in round_seconds],
        },
    }
    for inst, row in per_institution.items():
        row["rejected_replies"] = sum(1 for ex in igrid.exchanges if inst in ex.rejected)
    signed_artifact(
        out_dir / "model", final_arrays, last_round, {"federated": metrics["federated"]}
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    log(INFO, "Wrote %s and %s", out_dir / "model", out_dir / "metrics.json")
    events.emit(events.ServerEvent("done", settings.rounds, settings.rounds, metrics["federated"]))
