"""SCAFFOLD (Karimireddy et al., 2020) as a Flower strategy.

Flower 1.42 ships no SCAFFOLD strategy (its baselines have one for the legacy API only), so
this is a thin subclass of Flower's FedAvg: the model is aggregated exactly as FedAvg does,
and the control variate rides in the same ArrayRecord (`jointcredit.federation.control`). What
the coordinator keeps between rounds is c, the example-weighted mean of the institutions'
latest mean gradients; each institution keeps its own c_i.

Why: with one local epoch per round, each lender's steps drift toward its own optimum, so
plain FedAvg leaves the MLP below pooled training (and more local steps make it worse);
correcting every local gradient by c - c_i removes most of that gap (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from jointcredit.federation import control


class Scaffold(FedAvg):
    """FedAvg whose clients correct their local gradients with SCAFFOLD control variates.

    All sampled institutions train every round here (fraction 1.0); with partial
    participation c would be the mean over the round's sample, an approximation of
    SCAFFOLD's running mean over everyone."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.control: ArrayRecord | None = None

    def summary(self) -> None:
        log(INFO, "\t└──> SCAFFOLD control variates ride with the model arrays")
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.control is None:
            self.control = control.zeros(arrays)
        return super().configure_train(
            server_round, control.join(arrays, self.control), config, grid
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        model, new_control = control.split(arrays)
        if not new_control:
            raise ValueError(
                "the institutions replied without SCAFFOLD control variates: "
                "are they running an older ClientApp?"
            )
        self.control = new_control
        return model, metrics
