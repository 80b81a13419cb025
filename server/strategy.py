"""Which Flower strategy aggregates: the configured FedAvg family, or a robust rule."""

from __future__ import annotations

import math
import random
from typing import Any

from flwr.serverapp.strategy import (
    Bulyan,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
)

from jointcredit.federation.choices import train_sample_size
from jointcredit.federation.protocol import UNIT_WEIGHT
from jointcredit.federation.settings import RunSettings
from jointcredit.privacy import institution_dp
from jointcredit.privacy.robust import attacker_ids
from jointcredit.server.scaffold import Scaffold

DPStrategy = DifferentialPrivacyServerSideFixedClipping | DifferentialPrivacyClientSideFixedClipping


def sampling(settings: RunSettings, n_nodes: int) -> dict[str, Any]:
    """The FedAvg arguments that choose who trains each round: every institution, or under
    `fraction-train` a sample of them. Flower draws it with Python's `random` from the nodes
    in institution order (`InstitutionGrid.get_node_ids`); seeded from the run seed here, the
    same seed draws the same institutions each round."""
    if settings.fraction_train < 1:
        random.seed(settings.seed)
    return {
        "fraction_train": settings.fraction_train,
        "min_train_nodes": train_sample_size(settings.fraction_train, n_nodes),
    }


def build_strategy(
    settings: RunSettings, n_nodes: int, common: dict[str, Any]
) -> FedAvg | DPStrategy:
    """`common`: the FedAvg arguments every strategy shares (fractions, minimums, metrics).
    `settings` come validated for `n_nodes` institutions (`RunSettings.for_institutions`),
    so every combination here can work."""
    if settings.privacy == "dp-institution":
        return institution_dp_strategy(settings, n_nodes, common)
    if settings.aggregator == "fedavg":
        if settings.strategy == "fedprox":
            return FedProx(proximal_mu=settings.proximal_mu, **common)
        if settings.strategy == "fedavgm":
            return FedAvgM(server_momentum=settings.server_momentum, **common)
        if settings.strategy == "scaffold":
            return Scaffold(**common)
        return FedAvg(**common)
    f = settings.assumed_attackers_resolved
    if settings.aggregator == "median":
        return FedMedian(**common)
    if settings.aggregator == "trimmed":
        return FedTrimmedAvg(beta=settings.trim_fraction, **common)
    if settings.aggregator == "krum":
        return Krum(num_malicious_nodes=f, **common)
    if settings.aggregator == "multikrum":
        return MultiKrum(num_malicious_nodes=f, num_nodes_to_select=n_nodes - f, **common)
    return Bulyan(num_malicious_nodes=f, **common)


def institution_dp_strategy(
    settings: RunSettings, n_nodes: int, common: dict[str, Any]
) -> DPStrategy:
    """Flower's fixed-clipping DP wrapper around plain, equally weighted FedAvg, with Flower's
    RDP accountant enforcing `epsilon` (it refuses a release that would exceed it)."""
    noise = settings.noise_multiplier or institution_dp.calibrate_noise(
        settings.epsilon, settings.delta, settings.rounds, n_nodes
    )
    wrapper = (
        DifferentialPrivacyServerSideFixedClipping
        if settings.dp_clipping == "server"
        else DifferentialPrivacyClientSideFixedClipping
    )
    return wrapper(
        FedAvg(weighted_by_key=UNIT_WEIGHT, **common),
        noise_multiplier=noise,
        clipping_norm=settings.clipping_norm,
        num_sampled_clients=n_nodes,
        accountant=institution_dp.accountant(
            n_nodes, settings.delta, None if math.isinf(settings.epsilon) else settings.epsilon
        ),
    )


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
            else settings.assumed_attackers_resolved
        ),
        "attack": {
            "kind": settings.attack,
            "attackers": attackers,
            "scale": settings.attack_scale if settings.attack in ("sign-flip", "scale") else None,
        },
    }
