"""Secure aggregation: the training rounds run as Flower's SecAgg+ workflow.

SecAgg+ exists only on Flower's legacy API (see ../shared notes and Flower's docs), so the
training phase of a `--privacy secagg` run is a `DefaultWorkflow(fit_workflow=
SecAggPlusWorkflow(...))` over a `LegacyContext` with the legacy FedAvg / FedAvgM: the
coordinator only ever sees masked vectors and their sum, never one institution's update. The
rest of the run (preprocessing query, final evaluation and personalisation, artifacts) stays
on the Message API.

Signing with masking: each institution signs every stage reply - its public keys, its
encrypted key shares, its masked vector, its unmasking shares - bound to run, node and
institution, and `InstitutionGrid` verifies each before the workflow uses it. What a
signature proves under SecAgg+ is who contributed which masked vector (nobody can inject or
swap one), not what the unmasked update was: no party ever sees that.

The workflow reports failure only in its logs and history (a round whose unmasking fails keeps
the previous model silently), so `run_secagg` checks the history: every round must have
aggregated the expected institutions, or the run fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, MetricRecord
from flwr.common import ndarrays_to_parameters
from flwr.common.typing import NDArrays, Scalar
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.strategy import FedAvgM as LegacyFedAvgM
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

from jointcredit.federation.choices import secagg_shares_and_threshold
from jointcredit.federation.metrics import SecAgg
from jointcredit.federation.protocol import RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import InstitutionGrid

AGGREGATED = "institutions-aggregated"
QUANTIZATION_RANGE = 2**22  # Flower's default: training weights in 2^22 levels
# Binning counts: whole numbers below this, quantised with a step of 1 (2^22 levels over
# [-2^21, 2^21]), so they pass unrounded.
COUNT_RANGE = 2**21
# SecAgg+ adds modulo 2^32 (Flower's default modulus); each institution adds up to 2 *
# COUNT_RANGE (its shifted value, and as much again for its weight's factor), so fewer than
# this many institutions never wrap around.
MAX_SUMMANDS = 2**32 // (2 * COUNT_RANGE)
SIGNED_STAGES = (
    "every stage reply (public keys, encrypted shares, masked vector, unmasking shares) is "
    "signed by its institution and verified before the workflow uses it"
)


def shares_and_threshold(settings: RunSettings, n: int) -> tuple[int, int]:
    """The key shares and reconstruction threshold for `n` institutions (the settings refuse
    combinations SecAgg+ cannot run before any node starts)."""
    return secagg_shares_and_threshold(settings.secagg_shares, settings.secagg_threshold, n)


def aggregated_per_round(history: list[tuple[int, Scalar]], rounds: int) -> dict[int, int]:
    """How many institutions each round's aggregate covers, from the workflow's history; a
    round without one fails the run (the workflow itself only logs it and keeps the previous
    model: too few institutions answered a stage, or unmasking failed)."""
    aggregated = {int(r): int(n) for r, n in sorted(history)}
    missing = [r for r in range(1, rounds + 1) if r not in aggregated]
    if missing:
        raise FederationError(
            f"SecAgg+ produced no aggregate in round(s) {missing} (the workflow does not raise: "
            "too few institutions answered a stage, or unmasking failed; see the log)"
        )
    return aggregated


def _run(
    grid: InstitutionGrid,
    context: Context,
    settings: RunSettings,
    strategy: LegacyFedAvg,
    *,
    rounds: int,
    n_nodes: int,
    max_weight: float,
    clipping_range: float,
    quantization_range: int = QUANTIZATION_RANGE,
) -> LegacyContext:
    """`rounds` rounds of `strategy` with SecAgg+ as the fit workflow; the legacy context
    (state and history) afterwards."""
    num_shares, threshold = shares_and_threshold(settings, n_nodes)
    legacy = LegacyContext(
        context,
        config=ServerConfig(num_rounds=rounds, round_timeout=settings.round_timeout),
        strategy=strategy,
    )
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=num_shares,
            reconstruction_threshold=threshold,
            max_weight=max_weight,
            clipping_range=clipping_range,
            quantization_range=quantization_range,
            timeout=settings.round_timeout,
        )
    )
    workflow(grid, legacy)
    return legacy


def secure_sum(
    grid: InstitutionGrid,
    context: Context,
    settings: RunSettings,
    length: int,
    config: dict[str, Scalar],
    *,
    n_nodes: int,
) -> np.ndarray:
    """The federation's sum of one vector of counts per institution, through one SecAgg+
    round (under `secagg`: the binning rounds of a model on agreed bins, the trees' levels):
    the coordinator sees masked vectors and their sum only. Exact for whole counts below
    `COUNT_RANGE`: with weight 1 each and a quantisation step of 1 they pass unrounded. Every
    institution must be in the sum (the bins and the trees cover every institution that
    trains): a dropout fails the run."""
    if n_nodes >= MAX_SUMMANDS:
        raise FederationError(
            f"SecAgg+ sums counts of fewer than {MAX_SUMMANDS} institutions exactly; the run "
            f"has {n_nodes}"
        )

    def aggregate_fit_metrics(results: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
        return {AGGREGATED: len(results)}

    strategy = LegacyFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n_nodes,
        min_available_clients=n_nodes,
        on_fit_config_fn=lambda _round: dict(config),
        initial_parameters=ndarrays_to_parameters([np.zeros(length)]),
        fit_metrics_aggregation_fn=aggregate_fit_metrics,
    )
    legacy = _run(
        grid,
        context,
        settings,
        strategy,
        rounds=1,
        n_nodes=n_nodes,
        max_weight=1.0,
        clipping_range=float(COUNT_RANGE),
        quantization_range=2 * COUNT_RANGE,
    )
    history = legacy.history.metrics_distributed_fit.get(AGGREGATED, [])
    summed = aggregated_per_round(history, 1)[1]
    if summed != n_nodes:
        raise FederationError(
            f"SecAgg+ summed the vectors of {summed} of {n_nodes} institutions: the bins and a "
            "tree level's histograms must cover every institution that trains"
        )
    # The workflow returns the mean of the vectors (FedAvg, weight 1 each).
    (mean,) = legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
    out: np.ndarray = np.rint(np.asarray(mean, np.float64) * n_nodes).astype(np.int64)
    return out


def run_secagg(
    grid: InstitutionGrid,
    context: Context,
    settings: RunSettings,
    *,
    initial: ArrayRecord,
    train_config: RoundConfig,
    n_nodes: int,
    max_examples: int,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None],
) -> tuple[ArrayRecord, SecAgg]:
    """Run `settings.rounds` SecAgg+ training rounds; returns the final global arrays and the
    record for metrics.json."""
    # RunSettings refuses secagg with a robust aggregator (it needs each institution's update).
    names = list(initial.keys())

    def arrays_of(ndarrays: NDArrays) -> ArrayRecord:
        return ArrayRecord(
            {n: Array(np.ascontiguousarray(a)) for n, a in zip(names, ndarrays, strict=True)}
        )

    def legacy_evaluate(
        server_round: int, ndarrays: NDArrays, config: dict[str, Scalar]
    ) -> tuple[float, dict[str, Scalar]] | None:
        # The coordinator's progress hook (central evaluation, checkpoints); the legacy API
        # wants a loss, which nothing here reads.
        evaluate_fn(server_round, arrays_of(ndarrays))
        return 0.0, {}

    def fit_config(server_round: int) -> dict[str, Scalar]:
        config = train_config.model_copy(
            update={
                "server_round": server_round,
                "proximal_mu": settings.proximal_mu if settings.strategy == "fedprox" else None,
            }
        )
        return dict(config.values())

    def aggregate_fit_metrics(results: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
        # What each institution reported is in the verified exchange records; the workflow's
        # history only needs to say how many were aggregated.
        return {AGGREGATED: len(results)}

    common: dict[str, Any] = {
        "fraction_fit": 1.0,
        "fraction_evaluate": 0.0,  # federated evaluation runs on the Message API afterwards
        "min_fit_clients": n_nodes,
        "min_available_clients": n_nodes,
        "evaluate_fn": legacy_evaluate,
        "on_fit_config_fn": fit_config,
        "initial_parameters": ndarrays_to_parameters(
            [np.asarray(a.numpy()) for a in initial.values()]
        ),
        "fit_metrics_aggregation_fn": aggregate_fit_metrics,
    }
    strategy = (
        LegacyFedAvgM(server_momentum=settings.server_momentum, **common)
        if settings.strategy == "fedavgm"
        else LegacyFedAvg(**common)
    )
    num_shares, threshold = shares_and_threshold(settings, n_nodes)
    legacy = _run(
        grid,
        context,
        settings,
        strategy,
        rounds=settings.rounds,
        n_nodes=n_nodes,
        max_weight=float(max_examples),
        clipping_range=settings.secagg_clipping_range,
    )

    aggregated = aggregated_per_round(
        legacy.history.metrics_distributed_fit.get(AGGREGATED, []), settings.rounds
    )
    final = legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
    record = SecAgg(
        num_shares=num_shares,
        reconstruction_threshold=threshold,
        clipping_range=settings.secagg_clipping_range,
        max_weight=max_examples,
        institutions_aggregated=aggregated,
        signed=SIGNED_STAGES,
    )
    return arrays_of(final), record
