"""What metrics.json and the artifact say about privacy: the setting, the budget, what was spent.

Record-level DP is accounted by each institution (its data, its accountant); the coordinator
only collects the epsilon each one reports with its signed training replies. The headline
`epsilon_spent` is the largest over institutions: the guarantee every borrower gets.
"""

from __future__ import annotations

import math
from typing import Any

from flwr.app import MessageType

from jointcredit.federation.metrics import InstitutionDP, RecordDP
from jointcredit.federation.protocol import TrainMetrics
from jointcredit.federation.settings import RunSettings
from jointcredit.server.grid import Exchange


def _train_exchanges(exchanges: list[Exchange]) -> list[Exchange]:
    return [
        ex
        for ex in exchanges
        if ex.message_type == MessageType.TRAIN and ex.server_round is not None
    ]


def train_metrics(ex: Exchange) -> dict[str, TrainMetrics]:
    """What each institution reported with its verified train reply (withheld ones too)."""
    rows = {**ex.metrics, **ex.withheld}
    return {i: TrainMetrics.parse(m, f"train metrics of {i}") for i, m in sorted(rows.items())}


def round_epsilons(ex: Exchange) -> dict[str, float | None]:
    """Each institution's epsilon after this training round (record-level DP only)."""
    return {i: m.epsilon for i, m in train_metrics(ex).items() if m.dp_epsilon is not None}


def privacy_record(
    settings: RunSettings,
    exchanges: list[Exchange],
    institutions: list[str],
    strategy: object = None,
    central_epsilon: dict[int, float] | None = None,
) -> dict[str, Any]:
    """The privacy part of `Privacy` (metrics.json, the signed manifest): the setting, the
    budget, what was spent and how."""
    record: dict[str, Any] = {
        "setting": settings.privacy,
        "epsilon": None,
        "delta": None,
        "epsilon_spent": None,
        "epsilon_per_institution": None,
    }
    if settings.privacy == "dp-institution":
        return record | _institution_record(settings, institutions, strategy, central_epsilon)
    if settings.privacy != "dp-record":
        return record
    last: dict[str, TrainMetrics] = {}
    steps: dict[str, int] = dict.fromkeys(institutions, 0)
    exhausted: dict[str, int] = {}
    for ex in _train_exchanges(exchanges):
        assert ex.server_round is not None
        for inst, m in train_metrics(ex).items():
            if m.dp_epsilon is None:
                continue
            last[inst] = m
            steps[inst] = steps.get(inst, 0) + int(m.dp_steps or 0)
            if (m.dp_exhausted or 0) > 0:
                exhausted.setdefault(inst, ex.server_round)
    per_inst = {i: m.epsilon for i, m in sorted(last.items())}
    noiseless = math.isinf(settings.epsilon)
    spent = [e for e in per_inst.values() if e is not None]
    record.update(
        epsilon=None if noiseless else settings.epsilon,
        delta=settings.delta,
        epsilon_spent=None if noiseless or not spent else max(spent),
        epsilon_per_institution=per_inst,
        record_dp=RecordDP(
            mechanism="DP-SGD (Opacus), Poisson sampling, RDP accountant per institution",
            max_grad_norm=settings.max_grad_norm,
            noise_multiplier={i: m.dp_noise_multiplier for i, m in sorted(last.items())},
            sample_rate={i: m.dp_sample_rate for i, m in sorted(last.items())},
            steps=dict(sorted(steps.items())),
            budget_exhausted_round=dict(sorted(exhausted.items())),
            covers="model updates sent by each institution (hence the released model); "
            "not the one-off preprocessing summaries or evaluation metrics",
        ),
    )
    return record


def _institution_record(
    settings: RunSettings,
    institutions: list[str],
    strategy: object,
    central_epsilon: dict[int, float] | None,
) -> dict[str, Any]:
    """Institution-level DP is one guarantee for the federation, from Flower's accountant on
    the coordinator: every institution gets the same epsilon."""
    spent = getattr(strategy, "privacy_spent", lambda: None)()
    epsilon = float(spent.epsilon) if spent is not None and spent.num_releases else None
    side = "Server" if settings.dp_clipping == "server" else "Client"
    return {
        "epsilon": settings.epsilon if math.isfinite(settings.epsilon) else None,
        "delta": settings.delta,
        "epsilon_spent": epsilon,
        "epsilon_per_institution": dict.fromkeys(sorted(institutions), epsilon),
        "institution_dp": InstitutionDP(
            mechanism=f"Flower DifferentialPrivacy{side}SideFixedClipping around equally "
            "weighted FedAvg, Flower RdpAccountant (no sampling amplification)",
            clipping=settings.dp_clipping,
            clipping_norm=settings.clipping_norm,
            noise_multiplier=getattr(strategy, "noise_multiplier", None),
            releases=spent.num_releases if spent is not None else 0,
            epsilon_by_round=dict(sorted((central_epsilon or {}).items())),
            covers="whether an institution took part (its whole update), for the released "
            "global models; not the preprocessing summaries or evaluation metrics",
        ),
    }
