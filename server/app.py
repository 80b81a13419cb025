"""The coordinator's ServerApp: agree preprocessing, run the strategy, write the artifact.

    1. wait for the institution nodes, check the settings hold for that many institutions,
       agree preprocessing from their summaries (query round);
    2. the configured Flower strategy (or a robust rule, or SecAgg+'s workflow) for `rounds`
       rounds, federated evaluation each round and, in simulation, central evaluation on the
       pooled test split; a signed checkpoint per round (`tracker`);
    3. one last evaluate round where each institution also personalises a copy (hierarchical
       prior: a `query.prior` round first; `personalization`);
    4. the signed OUT/model/, OUT/trust.json and OUT/metrics.json (`report`).
Replies pass through `InstitutionGrid`, which verifies each reply's signature before any
strategy sees it and orders replies so a seeded run is reproducible.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, MessageType, MetricRecord, MetricRecordValues, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.exception import PrivacyBudgetExhausted

from jointcredit.federation.metrics import (
    Headline,
    PreprocessingDigest,
    Privacy,
    RunMetrics,
    Scores,
    SecAgg,
    Stopped,
    Timing,
)
from jointcredit.federation.protocol import NUM_EXAMPLES, RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import save_artifact
from jointcredit.models.learners import architecture, build_model
from jointcredit.server import events, report
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import BudgetSpent, InstitutionGrid, metric_rows, nan_weighted_mean
from jointcredit.server.identity import CoordinatorIdentity, coordinator_identity, discard_generated
from jointcredit.server.personalization import final_round
from jointcredit.server.preprocessing import agree_preprocessing, wait_for_nodes
from jointcredit.server.privacy import privacy_record
from jointcredit.server.secagg import run_secagg
from jointcredit.server.strategy import build_strategy, robustness_record
from jointcredit.server.tracker import RoundTracker, central_evaluator
from jointcredit.server.verify import UpdateVerifier

app = ServerApp()


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

    # 1. Institutions, the settings for that many, and the agreed preprocessing.
    events.emit(events.ServerEvent("preprocessing", total_rounds=settings.rounds))
    nodes = wait_for_nodes(igrid, settings.min_nodes, timeout=settings.round_timeout)
    # The rules that need the count (a robust rule's quorum) hold for the nodes that joined;
    # the settings themselves stay as given (`institutions` also selects the data).
    settings.with_institutions(len(nodes))
    spec, schema, node_inst, summaries = agree_preprocessing(igrid, nodes, settings)
    institutions = sorted(node_inst.values())
    log(INFO, "Institutions: %s", ", ".join(institutions))
    privacy = Privacy.model_validate(
        {**privacy_record(settings, [], institutions), **robustness_record(settings, institutions)}
    )
    arch = architecture(settings.model, spec.n_outputs)
    initial = build_model(arch, seed=settings.seed)

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
                "privacy": privacy.model_dump(mode="json", exclude_unset=True),
                "updates": report.accepted_updates(igrid, server_round),
            },
        )

    tracker = RoundTracker(
        settings,
        arch,
        central_evaluator(settings, institutions, spec),
        checkpoint=lambda arrays, r, central: signed_artifact(
            out_dir / "checkpoints" / f"round-{r:03d}",
            arrays,
            r,
            {"central": report.clean(central)},
        ),
    )

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
    tracker.strategy = strategy
    round_config = RoundConfig(preprocessing=spec.to_json())
    training_started = time.monotonic()
    stopped: Stopped | None = None
    secagg: SecAgg | None = None
    try:
        if strategy is None:
            final_arrays, secagg = run_secagg(
                igrid,
                context,
                settings,
                initial=ArrayRecord(initial.state_dict()),
                train_config=round_config,
                n_nodes=len(nodes),
                max_examples=max(s.rows for s in summaries),
                evaluate_fn=tracker.evaluate_fn,
            )
        else:
            final_arrays = strategy.start(
                grid=igrid,
                initial_arrays=ArrayRecord(initial.state_dict()),
                num_rounds=settings.rounds,
                timeout=settings.round_timeout,
                train_config=round_config.to_record(),
                evaluate_config=round_config.to_record(),
                evaluate_fn=tracker.evaluate_fn,
            ).arrays
        last_round = settings.rounds
    except (BudgetSpent, PrivacyBudgetExhausted) as exc:
        # An enforced budget: nobody may train (record-level) or no further aggregate may be
        # released (institution-level). The model stands as it was after the last round that
        # trained; the run says so and goes on to its outputs.
        last_round, final_arrays = tracker.last()
        stopped = Stopped(after_round=last_round, reason=str(exc))
        log(WARNING, "Training stopped after round %s: %s", last_round, exc)
    _check_rounds(igrid, last_round, stopped is not None)
    spent = privacy_record(
        settings, igrid.exchanges, institutions, strategy, tracker.central_epsilon
    )
    for key, value in spent.items():
        setattr(privacy, key, value)
    if secagg is not None:
        privacy.secagg = secagg
    if stopped is not None:
        privacy.stopped = stopped

    # 3. Personalisation: each institution fine-tunes a copy of the final model on its own rows.
    personalization_started = time.monotonic()
    events.emit(events.ServerEvent("personalization", settings.rounds, settings.rounds))
    final, personalization = final_round(
        igrid, nodes, node_inst, final_arrays, initial, round_config, settings
    )

    # 4. Outputs.
    per_institution = report.institution_results(final, igrid)
    fed_eval = report.clean(nan_weighted_mean(list(final.metrics.values()), NUM_EXAMPLES))
    central = tracker.central_by_round.get(last_round)
    headline = Headline(
        **(central or {k: fed_eval.get(k) for k in Scores.model_fields}),
        evaluated_on="pooled test split" if tracker.central else "institutions (weighted)",
    )
    metrics = RunMetrics(
        run_id=context.run_id,
        config=settings.to_run_config(),
        institutions=institutions,
        preprocessing=PreprocessingDigest(n_features=spec.n_outputs, sha256=spec.digest()),
        federated=headline,
        federated_eval=fed_eval,
        per_institution=per_institution,
        personalization=personalization,
        rounds=report.round_records(
            igrid, tracker.central_by_round, settings.rounds, tracker.central_epsilon
        ),
        trained_rounds=last_round,
        security=report.security(igrid, verifier, identity),
        privacy=privacy,
        timing=Timing(
            server_seconds=round(time.monotonic() - started, 3),
            setup_seconds=round(training_started - started, 3),
            training_seconds=round(personalization_started - training_started, 3),
            personalization_seconds=round(time.monotonic() - personalization_started, 3),
            round_seconds=[round(s, 3) for s in tracker.round_seconds],
        ),
    )
    federated = metrics.federated.model_dump(exclude_unset=True)
    signed_artifact(out_dir / "model", final_arrays, last_round, {"federated": federated})
    metrics.write(out_dir / "metrics.json")
    log(INFO, "Wrote %s and %s", out_dir / "model", out_dir / "metrics.json")
    events.emit(events.ServerEvent("done", settings.rounds, settings.rounds, federated))


def _check_rounds(grid: InstitutionGrid, last_round: int, stopped: bool) -> None:
    """Every round up to `last_round` trained (a stopped run may have asked for one more:
    under record-level DP everyone withheld)."""
    trained = {
        e.server_round
        for e in grid.exchanges
        if e.message_type == MessageType.TRAIN and e.server_round is not None
    }
    expected = set(range(1, last_round + 1))
    if not expected <= trained <= expected | ({last_round + 1} if stopped else set()):
        raise FederationError(f"training rounds missing: ran {sorted(trained)}")
