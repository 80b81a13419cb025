"""The training rounds, from any round on: what Flower's `Strategy.start` does, which always
begins at round 1 (a resumed run begins after its checkpoint's round).

Each round is the strategy's own configure_train / aggregate_train / configure_evaluate /
aggregate_evaluate through the grid, then `evaluate_fn` (the coordinator's per-round hook:
central evaluation, checkpoint), exactly in `Strategy.start`'s order, so an uninterrupted run
takes the same steps it took through `start`.
"""

from __future__ import annotations

from collections.abc import Callable
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

# Flower's line for a round's aggregated metrics, as `start` logs it: `link run` follows the
# run's log and shows the institutions' AUC from it (deploy/processes.py `reported_auc`).
AGGREGATED = "\t└──> Aggregated MetricRecord: %s"


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    arrays: ArrayRecord,
    *,
    first_round: int,
    num_rounds: int,
    timeout: float,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None],
) -> ArrayRecord:
    """Rounds `first_round`..`num_rounds` from `arrays` (the model after round
    `first_round - 1`); returns the last global model. Round 1 first evaluates the initial
    model (round 0), as `start` does."""
    if first_round == 1:
        evaluate_fn(0, arrays)
    for server_round in range(first_round, num_rounds + 1):
        log(INFO, "[ROUND %s/%s]", server_round, num_rounds)
        replies = grid.send_and_receive(
            messages=strategy.configure_train(server_round, arrays, train_config, grid),
            timeout=timeout,
        )
        aggregated, train_metrics = strategy.aggregate_train(server_round, replies)
        if aggregated is not None:
            arrays = aggregated
        if train_metrics is not None:
            log(INFO, AGGREGATED, train_metrics)
        replies = grid.send_and_receive(
            messages=strategy.configure_evaluate(server_round, arrays, evaluate_config, grid),
            timeout=timeout,
        )
        evaluate_metrics = strategy.aggregate_evaluate(server_round, replies)
        if evaluate_metrics is not None:
            log(INFO, AGGREGATED, evaluate_metrics)
        evaluate_fn(server_round, arrays)
    return arrays
