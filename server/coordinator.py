"""One run of the federation from the coordinator's side, phase by phase.

    1. `join`: wait for the institution nodes, check the settings hold for that many
       institutions, agree preprocessing from their summaries (query round); for a model on
       agreed bins (the binned scorecard), agree the bins, their counts and WOE (`binning`:
       two more query rounds), which become its preprocessing;
    2. `train`: the configured Flower strategy (or a robust rule, or SecAgg+'s workflow) for
       `rounds` rounds, federated evaluation each round and, in simulation, central evaluation
       on the pooled test split; a signed checkpoint per round (`tracker`). Gradient-boosted
       trees instead grow `trees` trees from the institutions' histograms, one exchange per
       tree level (`trees`), evaluated centrally after each tree;
    3. `personalise`: one last evaluate round where each institution also personalises a copy
       (hierarchical prior: a `query.prior` round first; `personalization`; trees: the
       evaluation only); then, when the schema protects attributes, fairness from summed
       group counts (`fairness`: two query rounds, the counts a SecAgg+ sum under `secagg`);
       then the reference round (`reference`: training rows per score band and feature bin,
       the artifact's `reference.json` for stability monitoring);
    4. `write`: the signed OUT/model/, OUT/trust.json and OUT/metrics.json (`report`).
Replies pass through `InstitutionGrid`, which verifies each reply's signature before any
strategy sees it and orders replies so a seeded run is reproducible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, MessageType, MetricRecord, MetricRecordValues, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.exception import PrivacyBudgetExhausted
from torch import nn

from jointcredit.data.schema import Schema
from jointcredit.federation.checkpoints import checkpoint_dir
from jointcredit.federation.fairness import Fairness
from jointcredit.federation.metrics import (
    Headline,
    Personalization,
    PreprocessingDigest,
    Privacy,
    RoundRecord,
    RunMetrics,
    Scores,
    Stopped,
    Timing,
    TreeTiming,
)
from jointcredit.federation.protocol import NUM_EXAMPLES, ReferenceQuery, RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import CHECKPOINT, FINAL, MANIFEST_BINNING, Stage, save_artifact
from jointcredit.models.binning import BinningSpec, BinningTable
from jointcredit.models.binning.grid import spans
from jointcredit.models.learners import Architecture, architecture, build_model, learner
from jointcredit.models.learners.gbdt import tree_params
from jointcredit.models.preprocessing import InstitutionSummary, PreprocessingSpec
from jointcredit.models.reference import REFERENCE, Reference, reference_bins
from jointcredit.models.scorecard import woe_preprocessing
from jointcredit.models.trees import Tree, base_margin
from jointcredit.models.trees.exchange import ensemble_of, ensemble_record
from jointcredit.server import events, report
from jointcredit.server.binning import agree_binning, agree_bins, binning_rounds
from jointcredit.server.errors import FederationError
from jointcredit.server.fairness import measure_fairness
from jointcredit.server.faults import SimulatedNetwork
from jointcredit.server.grid import (
    BudgetSpent,
    Exchange,
    InstitutionGrid,
    metric_rows,
    nan_weighted_mean,
)
from jointcredit.server.identity import CoordinatorIdentity
from jointcredit.server.personalization import final_round
from jointcredit.server.preprocessing import agree_preprocessing, wait_for_nodes
from jointcredit.server.privacy import privacy_record
from jointcredit.server.reference import (
    folds_into_final_evaluation,
    reference_of,
    reference_round,
    secure_reference,
)
from jointcredit.server.resume import (
    ResumePoint,
    ServerState,
    check_joined,
    merged_rounds,
    merged_spent,
    restore_strategy,
    restore_tracker,
    resume_point,
    server_state,
    write_atomically,
)
from jointcredit.server.rounds import run_rounds
from jointcredit.server.secagg import run_secagg
from jointcredit.server.strategy import build_strategy, robustness_record, sampling
from jointcredit.server.tracker import RoundTracker, central_evaluator
from jointcredit.server.tree_sums import PlainSums, SecureSums, secure_sums
from jointcredit.server.trees import CentralTrees, evaluate_ensemble, grow_federated
from jointcredit.server.verify import UpdateVerifier


def _aggregate_evaluate_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    # Undefined metrics (one-class test split) arrive as NaN; skip them instead of poisoning.
    mean: dict[str, MetricRecordValues] = dict(nan_weighted_mean(metric_rows(records), weight_key))
    return MetricRecord(mean)


@dataclass
class Federation:
    """Who joined and what they agreed: fixed once the query round is done."""

    nodes: list[int]
    node_inst: dict[int, str]
    spec: PreprocessingSpec
    schema: Schema
    summaries: list[InstitutionSummary]
    architecture: Architecture
    initial: nn.Module | None  # None: trees, which start from no model
    binning: BinningTable | None = None  # models on agreed bins: the bins, WOE and IV
    bins: BinningSpec | None = None  # gradient-boosted trees: the agreed fine bins
    # Trees: each numeric feature's trimmed training span, from the bins' summed histogram.
    spans: dict[str, tuple[float, float]] | None = None

    @property
    def institutions(self) -> list[str]:
        return sorted(self.node_inst.values())


@dataclass
class Trained:
    arrays: ArrayRecord
    last_round: int
    tracker: RoundTracker
    rounds: list[RoundRecord] | None = None  # trees: one record per tree
    tree_timing: TreeTiming | None = None


@dataclass
class Coordinator:
    grid: Grid
    context: Context
    settings: RunSettings
    identity: CoordinatorIdentity
    started: float = field(default_factory=time.monotonic)
    phase_started: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.verifier = UpdateVerifier(self.identity.trust, run_id=self.context.run_id)
        s = self.settings
        client_clipped = s.privacy == "dp-institution" and s.dp_clipping == "client"
        self.igrid = InstitutionGrid(
            SimulatedNetwork.around(self.grid, s, lambda: self.igrid.node_institution),
            self.verifier,
            s.min_valid_fraction,
            update_bound=s.clipping_norm if client_clipped else None,
            min_institutions=s.min_institutions,
        )
        self.out_dir = s.run_dir(self.context.run_id)
        self.sum_grid: InstitutionGrid | None = None  # secagg: the binning rounds' own grid
        self.level_grid: InstitutionGrid | None = None  # secagg trees: the level sums' own grid
        # resume = true: the verified checkpoint this run continues from (`run`).
        self.resumed: ResumePoint | None = None
        self.lineage = ServerState.new_lineage()
        self.strategy: object = None
        self.fairness: Fairness | None = None  # after training (`server.fairness`)
        self.fairness_grid: InstitutionGrid | None = None  # secagg: the fairness sum's grid
        self.reference: Reference | None = None  # the final artifact's, after training
        self.reference_folded = False  # it came with the final evaluation's replies
        self.reference_grid: InstitutionGrid | None = None  # secagg: its SecAgg+ sum's grid

    def run(self) -> RunMetrics:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "trust.json").write_bytes(self.identity.trust.to_bytes())
        if self.settings.resume:  # verified and compared before any node is asked anything
            self.resumed = resume_point(self.out_dir, self.identity.trust, self.settings)
            self.lineage = self.resumed.state.lineage
        fed = self.join()
        if self.resumed is not None:
            check_joined(self.resumed, fed.institutions, fed.spec)
        privacy = Privacy.model_validate(
            {
                **privacy_record(self.settings, [], fed.institutions),
                **robustness_record(self.settings, fed.institutions),
            }
        )
        trained = self.train(fed, privacy)
        final, personalization = self.personalise(fed, trained)
        # Fairness of the final model from summed group counts (`server/fairness.py`).
        bins = fed.bins.to_json() if fed.bins is not None else None
        self.fairness, self.fairness_grid = measure_fairness(
            self.grid,
            self.igrid,
            self.context,
            self.settings,
            fed.schema,
            fed.nodes,
            trained.arrays,
            RoundConfig(preprocessing=fed.spec.to_json(), bins=bins),
        )
        if not self.reference_folded:
            self.reference = self._reference(fed, trained)
        return self.write(fed, trained, privacy, final, personalization)

    # -- 1
    def join(self) -> Federation:
        s = self.settings
        events.emit(events.ServerEvent("preprocessing", total_rounds=s.rounds))
        nodes = wait_for_nodes(self.igrid, s.min_nodes, timeout=s.join_seconds)
        self.igrid.hold_members(nodes)
        # The rules that need the count (a robust rule's quorum, SecAgg+'s shares) must hold
        # for the nodes that joined: refused here, before any training message.
        s.for_institutions(len(nodes), "nodes that joined")
        spec, schema, node_inst, summaries = agree_preprocessing(self.igrid, nodes, s)
        log(INFO, "Institutions: %s", ", ".join(sorted(node_inst.values())))
        if learner(s.model).exchange == "histograms":
            # The scorecard's fine classing, `max-bins` per numeric feature: the trees need
            # no counts, so only the grid round runs.
            events.emit(events.ServerEvent("binning", total_rounds=s.rounds))
            rounds, self.sum_grid = binning_rounds(
                self.grid, self.igrid, self.context, s, schema, node_inst, summaries
            )
            bins, histogram = agree_bins(rounds, spec, max_bins=s.max_bins)
            arch = architecture(s.model, len(bins.features))
            fed = Federation(nodes, node_inst, spec, schema, summaries, arch, None, bins=bins)
            fed.spans = spans(histogram)
            return fed
        if learner(s.model).exchange != "weights":
            raise FederationError(f"model {s.model}: no coordinator round for its exchange")
        binning = None
        if learner(s.model).encoding == "woe":
            events.emit(events.ServerEvent("binning", total_rounds=s.rounds))
            rounds, self.sum_grid = binning_rounds(
                self.grid, self.igrid, self.context, s, schema, node_inst, summaries
            )
            binning = agree_binning(rounds, spec)
            spec = woe_preprocessing(binning)
        arch = architecture(s.model, spec.n_outputs)
        return Federation(
            nodes,
            node_inst,
            spec,
            schema,
            summaries,
            arch,
            build_model(arch, seed=s.seed),
            binning,
        )

    def _artifact(
        self,
        fed: Federation,
        privacy: Privacy,
        path: Path,
        arrays: ArrayRecord,
        server_round: int,
        metrics: dict[str, Any],
        stage: Stage,
        extra: dict[str, bytes] | None = None,
    ) -> None:
        prior = self.resumed.state if self.resumed is not None else None
        save_artifact(
            path,
            state={k: v.numpy() for k, v in arrays.to_torch_state_dict().items()},
            spec=fed.spec,
            architecture=fed.architecture,
            schema=fed.schema,
            institutions=fed.institutions,
            training=self.settings.provenance(),
            metrics=metrics,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            signer=self.identity.key,
            trust=self.identity.trust,
            bins=fed.bins,
            spans=fed.spans,
            stage=stage,
            run_id=self.context.run_id,
            provenance={
                "round": server_round,
                "privacy": privacy.model_dump(mode="json", exclude_unset=True),
                "updates": (prior.updates if prior else [])
                + report.accepted_updates(self.igrid, server_round, self.level_grid),
                # Each resume of this run: after which checkpoint round, when.
                **({"resumes": prior.resumes} if prior and prior.resumes else {}),
                # Models on agreed bins: the signed replies their bins and WOE came from.
                **(
                    {}
                    if fed.binning is None and fed.bins is None
                    else {MANIFEST_BINNING: report.accepted_binning(self.igrid, self.sum_grid)}
                ),
            },
            binning=fed.binning,
            extra=extra,
        )

    # -- 2
    def train(self, fed: Federation, privacy: Privacy) -> Trained:
        s, n = self.settings, len(fed.nodes)

        def checkpoint(arrays: ArrayRecord, r: int, central: dict[str, Any]) -> None:
            def write(path: Path) -> None:
                self._artifact(
                    fed,
                    privacy,
                    path,
                    arrays,
                    r,
                    {"central": report.clean(central)},
                    CHECKPOINT,
                    server_state(
                        self.lineage,
                        r,
                        self._prior(),
                        report.round_records(
                            self.igrid, tracker.central_by_round, r, tracker.central_epsilon
                        ),
                        report.accepted_updates(self.igrid, r),
                        tracker,
                        self._spent(fed, tracker),
                        self.strategy,
                    ).files(),
                )

            write_atomically(checkpoint_dir(self.out_dir, r), write)

        tracker = RoundTracker(
            s,
            fed.architecture,
            central_evaluator(s, fed.institutions, fed.spec),
            checkpoint=checkpoint,
        )
        common: dict[str, Any] = {
            **sampling(s, n),
            "fraction_evaluate": 1.0,
            "min_evaluate_nodes": n,
            "min_available_nodes": n,
            "evaluate_metrics_aggr_fn": _aggregate_evaluate_metrics,
        }
        if fed.bins is not None or fed.initial is None:
            assert fed.bins is not None  # only trees start from no model
            return self._train_trees(fed, fed.bins, tracker, privacy)
        strategy = None if s.privacy == "secagg" else build_strategy(s, n, common)
        tracker.strategy = self.strategy = strategy
        done = self.resumed.state.round if self.resumed is not None else 0
        config = RoundConfig(
            preprocessing=fed.spec.to_json(), lineage=self.lineage, resumed_from=done
        )
        initial = ArrayRecord(fed.initial.state_dict())
        if self.resumed is not None:
            assert strategy is not None  # secagg refuses resume (federation/rules.py)
            # The checkpoint stores arrays sorted by name; the strategies pair arrays by
            # position, so the model's own order comes back.
            initial = ArrayRecord({k: self.resumed.model[k] for k in fed.initial.state_dict()})
            restore_strategy(strategy, self.resumed, initial)
            restore_tracker(tracker, self.resumed.state, initial)
        self.phase_started["training"] = time.monotonic()
        stopped: Stopped | None = None
        try:
            if strategy is None:
                arrays, secagg = run_secagg(
                    self.igrid,
                    self.context,
                    s,
                    initial=initial,
                    train_config=config,
                    n_nodes=n,
                    max_examples=max(summary.rows for summary in fed.summaries),
                    evaluate_fn=tracker.evaluate_fn,
                )
                privacy.secagg = secagg
            else:
                arrays = run_rounds(
                    strategy,
                    self.igrid,
                    initial,
                    first_round=done + 1,
                    num_rounds=s.rounds,
                    timeout=s.round_timeout,
                    train_config=config.to_record(),
                    evaluate_config=config.to_record(),
                    evaluate_fn=tracker.evaluate_fn,
                )
            last_round = s.rounds
        except (BudgetSpent, PrivacyBudgetExhausted) as exc:
            # An enforced budget: nobody may train (record-level) or no further aggregate may
            # be released (institution-level). The model stands as it was after the last round
            # that trained; the run says so and goes on to its outputs.
            last_round, arrays = tracker.last()
            stopped = Stopped(after_round=last_round, reason=str(exc))
            log(WARNING, "Training stopped after round %s: %s", last_round, exc)
        _check_rounds(self.igrid, done, last_round, stopped is not None)
        spent = self._spent(fed, tracker)
        for key, value in spent.items():
            setattr(privacy, key, value)
        if stopped is not None:
            privacy.stopped = stopped
        return Trained(arrays, last_round, tracker)

    def _prior(self) -> ServerState | None:
        return self.resumed.state if self.resumed is not None else None

    def _spent(self, fed: Federation, tracker: RoundTracker) -> dict[str, Any]:
        """The privacy spent so far (with what was spent before a resume)."""
        spent = privacy_record(
            self.settings,
            self.igrid.exchanges,
            fed.institutions,
            self.strategy,
            tracker.central_epsilon,
        )
        return merged_spent(self._prior(), spent)

    def _train_trees(
        self, fed: Federation, bins: BinningSpec, tracker: RoundTracker, privacy: Privacy
    ) -> Trained:
        s = self.settings
        base = base_margin(
            sum(x.positives for x in fed.summaries), sum(x.rows for x in fed.summaries)
        )
        central = CentralTrees(tracker.central[0] if tracker.central else None, bins, base)
        started = [time.monotonic()]

        def after_tree(t: int, tree: Tree) -> dict[str, float | None]:
            values = central.after(tree)
            if values:
                tracker.central_by_round[t] = values
            tracker.round_seconds.append(time.monotonic() - started[0])
            events.emit(events.ServerEvent("round", t, s.trees, {**values}))
            started[0] = time.monotonic()
            return values

        self.phase_started["training"] = time.monotonic()
        sums: PlainSums | SecureSums = PlainSums(self.igrid, fed.nodes, s.round_timeout)
        if s.privacy == "secagg":
            rows = sum(x.rows for x in fed.summaries)
            sums = secure_sums(self.grid, self.igrid, self.context, s, fed.nodes, rows)
            self.level_grid = sums.grid
        params = tree_params(s, fed.schema, bins.names)
        run = grow_federated(sums, bins, params, base, after_tree)
        if isinstance(sums, SecureSums):
            privacy.secagg = sums.record(s)
        return Trained(ensemble_record(run.ensemble), s.trees, tracker, run.rounds, run.timing)

    # -- 3
    def personalise(self, fed: Federation, trained: Trained) -> tuple[Exchange, Personalization]:
        s = self.settings
        self.phase_started["personalization"] = time.monotonic()
        events.emit(events.ServerEvent("personalization", s.rounds, s.rounds))
        if fed.bins is not None:
            ensemble = ensemble_of(trained.arrays)
            levels = len(self.igrid.exchanges)  # a server round no level used
            final = evaluate_ensemble(
                self.igrid, fed.nodes, ensemble, fed.spec.to_json(), fed.bins, levels + 1, s
            )
            return final, Personalization(method=s.personalization_method)
        config = RoundConfig(preprocessing=fed.spec.to_json())
        assert fed.initial is not None  # a model that exchanges weights starts from one
        bins = reference_bins(fed.spec, fed.binning, fed.bins)
        query = ReferenceQuery(bins=bins.to_json()) if folds_into_final_evaluation(s) else None
        final, personalization, replies = final_round(
            self.igrid, fed.nodes, fed.node_inst, trained.arrays, fed.initial, config, s, query
        )
        if query is not None:  # the reference came with the final evaluation's replies
            self.reference = reference_of(replies, final, self.igrid, bins)
            self.reference_folded = True
        return final, personalization

    def _reference(self, fed: Federation, trained: Trained) -> Reference | None:
        bins = reference_bins(fed.spec, fed.binning, fed.bins)
        config = RoundConfig(
            preprocessing=fed.spec.to_json(),
            bins=None if fed.bins is None else fed.bins.to_json(),
        )
        rows = max(x.rows for x in fed.summaries)
        secure, self.reference_grid = secure_reference(
            self.grid, self.igrid, self.context, self.settings, len(fed.nodes), rows
        )
        return reference_round(
            self.igrid, fed.nodes, trained.arrays, config, bins, self.settings, secure,
            fed.institutions,
        )  # fmt: skip

    # -- 4
    def write(
        self,
        fed: Federation,
        trained: Trained,
        privacy: Privacy,
        final: Exchange,
        personalization: Personalization,
    ) -> RunMetrics:
        s, tracker = self.settings, trained.tracker
        fed_eval = report.clean(nan_weighted_mean(list(final.metrics.values()), NUM_EXAMPLES))
        central = tracker.central_by_round.get(trained.last_round)
        headline = Headline(
            **(central or {k: fed_eval.get(k) for k in Scores.model_fields}),
            evaluated_on="pooled test split" if tracker.central else "institutions (weighted)",
        )
        training, personal = (self.phase_started[k] for k in ("training", "personalization"))
        metrics = RunMetrics(
            run_id=self.context.run_id,
            config=s.to_run_config(),
            institutions=fed.institutions,
            preprocessing=PreprocessingDigest(
                n_features=fed.spec.n_outputs, sha256=fed.spec.digest()
            ),
            federated=headline,
            federated_eval=fed_eval,
            per_institution=report.institution_results(final, self.igrid),
            personalization=personalization,
            rounds=trained.rounds
            if trained.rounds is not None
            else merged_rounds(
                self._prior(),
                report.round_records(
                    self.igrid, tracker.central_by_round, s.rounds, tracker.central_epsilon
                ),
            ),
            trained_rounds=trained.last_round,
            security=report.security(
                self.igrid,
                self.verifier,
                self.identity,
                (self.sum_grid, self.level_grid, self.fairness_grid, self.reference_grid),
            ),
            privacy=privacy,
            timing=Timing(
                server_seconds=round(time.monotonic() - self.started, 3),
                setup_seconds=round(training - self.started, 3),
                training_seconds=round(personal - training, 3),
                personalization_seconds=round(time.monotonic() - personal, 3),
                round_seconds=[round(x, 3) for x in tracker.round_seconds],
                trees=trained.tree_timing,
            ),
        )
        if self.fairness is not None:
            metrics.fairness = self.fairness
        federated = metrics.federated.model_dump(exclude_unset=True)
        model_dir = self.out_dir / "model"
        self._artifact(
            fed,
            privacy,
            model_dir,
            trained.arrays,
            trained.last_round,
            {"federated": federated},
            FINAL,
            extra=None if self.reference is None else {REFERENCE: self.reference.to_bytes()},
        )
        metrics.write(self.out_dir / "metrics.json")
        log(INFO, "Wrote %s and %s", model_dir, self.out_dir / "metrics.json")
        events.emit(events.ServerEvent("done", s.rounds, s.rounds, federated))
        return metrics


def _check_rounds(grid: InstitutionGrid, done: int, last_round: int, stopped: bool) -> None:
    """Every round after `done` (the checkpoint a resumed run continued from) up to
    `last_round` trained, each once (a stopped run may have asked for one more: under
    record-level DP everyone withheld)."""
    trained = {
        e.server_round
        for e in grid.exchanges
        if e.message_type == MessageType.TRAIN and e.server_round is not None
    }
    expected = set(range(done + 1, last_round + 1))
    if not expected <= trained <= expected | ({last_round + 1} if stopped else set()):
        raise FederationError(f"training rounds missing: ran {sorted(trained)}")
