"""What metrics.json and the artifact say about privacy: the setting, the budget, what was spent.

Record-level DP is accounted by each institution (its data, its accountant); the coordinator
only collects the epsilon each one reports with its signed training replies. The headline
`epsilon_spent` is the largest over institutions: the guarantee every borrower gets.
"""

from __future__ import annotations

import math
from typing import Any

from flwr.app import MessageType

from jointcredit.models.settings import RunSettings
from jointcredit.server.grid import Exchange


def _train_exchanges(exchanges: list[Exchange]) -> list[Exchange]:
    return [
        ex
        for ex in exchanges
        if ex.message_type == MessageType.TRAIN and ex.server_round is not None
    ]


def _epsilon(reported: float) -> float | None:
    return None if reported < 0 or not math.isfinite(reported) else reported  # -1: no noise


def round_epsilons(ex: Exchange) -> dict[str, float | None]:
    """Each institution's epsilon after this training round (record-level DP only)."""
    rows = {**ex.metrics, **ex.withheld}
    return {i: _epsilon(m["dp-epsilon"]) for i, m in sorted(rows.items()) if "dp-epsilon" in m}


def privacy_record(
    settings: RunSettings,
    exchanges: list[Exchange],
    institutions: list[str],
    strategy: object = None,
    central_epsilon: dict[int, float] | None = None,
) -> dict[str, Any]:
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
    train = _train_exchanges(exchanges)
    last: dict[str, dict[str, float]] = {}
    steps: dict[str, int] = dict.fromkeys(institutions, 0)
    exhausted: dict[str, int] = {}
    for ex in train:
        assert ex.server_round is not None
        for inst, m in {**ex.metrics, **ex.withheld}.items():
            if "dp-epsilon" not in m:
                continue
            last[inst] = m
            steps[inst] = steps.get(inst, 0) + int(m["dp-steps"])
            if m["dp-exhausted"] > 0:
                exhausted.setdefault(inst, ex.server_round)
    per_inst = {i: _epsilon(m["dp-epsilon"]) for i, m in sorted(last.items())}
    noiseless = math.isinf(settings.epsilon)
    spent = [e for e in per_inst.values() if e is not None]
    record.update(
        {
            "epsilon": None if noiseless else settings.epsilon,
            "delta": settings.delta,
            "epsilon_spent": None if noiseless or not spent else max(spent),
            "epsilon_per_institution": per_inst,
            "record_dp": {
                "mechanism": "DP-SGD (Opacus), Poisson sampling, RDP accountant per institution",
                "max_grad_norm": settings.max_grad_norm,
                "noise_multiplier": {i: m["dp-noise-multiplier"] for i, m in sorted(last.items())},
                "sample_rate": {i: m["dp-sample-rate"] for i, m in sorted(last.items())},
                "steps": dict(sorted(steps.items())),
                # First round in which each institution could not take all its steps.
                "budget_exhausted_round": dict(sorted(exhausted.items())),
                "covers": "model updates sent by each institution (hence the released model); "
                "not the one-off preprocessing summaries or evaluation metrics",
            },
        }
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
    return {
        "epsilon": settings.epsilon if math.isfinite(settings.epsilon) else None,
        "delta": settings.delta,
        "epsilon_spent": epsilon,
        "epsilon_per_institution": dict.fromkeys(sorted(institutions), epsilon),
        "institution_dp": {
            "mechanism": "Flower DifferentialPrivacy"
            f"{'Server' if settings.dp_clipping == 'server' else 'Client'}SideFixedClipping "
            "around equally weighted FedAvg, Flower RdpAccountant (no sampling amplification)",
            "clipping": settings.dp_clipping,
            "clipping_norm": settings.clipping_norm,
            "noise_multiplier": getattr(strategy, "noise_multiplier", None),
            "releases": spent.num_releases if spent is not None else 0,
            "epsilon_by_round": dict(sorted((central_epsilon or {}).items())),
            "covers": "whether an institution took part (its whole update), for the released "
            "global models; not the preprocessing summaries or evaluation metrics",
        },
    }
