"""Which Flower strategy aggregates: the configured FedAvg family, or a robust rule."""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import (
    Bulyan,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
)

from jointcredit.models.settings import RunSettings
from jointcredit.privacy.robust import assumed_attackers, attacker_ids, check_aggregator


def build_strategy(settings: RunSettings, n_nodes: int, common: dict[str, Any]) -> FedAvg:
    """`common`: the FedAvg arguments every strategy shares (fractions, minimums, metrics)."""
    if settings.aggregator == "fedavg":
        if settings.strategy == "fedprox":
            return FedProx(proximal_mu=settings.proximal_mu, **common)
        if settings.strategy == "fedavgm":
            return FedAvgM(server_momentum=settings.server_momentum, **common)
        return FedAvg(**common)
    f = assumed_attackers(settings.assumed_attackers, settings.attackers)
    check_aggregator(settings.aggregator, n_nodes, f)
    if settings.aggregator == "median":
        return FedMedian(**common)
    if settings.aggregator == "trimmed":
        return FedTrimmedAvg(beta=settings.trim_fraction, **common)
    if settings.aggregator == "krum":
        return Krum(num_malicious_nodes=f, **common)
    if settings.aggregator == "multikrum":
        return MultiKrum(num_malicious_nodes=f, num_nodes_to_select=n_nodes - f, **common)
    return Bulyan(num_malicious_nodes=f, **common)


def robustness_record(settings: RunSettings, institutions: list[str]) -> dict[str, Any]:
    """What metrics.json says about the aggregation rule and the simulated attack."""
    attackers = (
        attacker_ids(institutions, settings.attackers, settings.seed)
        if settings.attack != "none"
        else []
    )
    return {
        "aggregator": settings.aggregator,
        "assumed_attackers": (
            None
            if settings.aggregator in ("fedavg", "median", "trimmed")
            else assumed_attackers(settings.assumed_attackers, settings.attackers)
        ),
        "attack": {
            "kind": settings.attack,
            "attackers": attackers,
            "scale": settings.attack_scale if settings.attack in ("sign-flip", "scale") else None,
        },
    }
