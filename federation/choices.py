"""The values run settings take, and the rules of the simulated attacks and robust rules
that more than one setting depends on."""

from __future__ import annotations

import math
from typing import Literal

ModelKind = Literal["logreg", "mlp", "scorecard", "gbdt"]
Strategy = Literal["fedavg", "fedprox", "fedavgm", "scaffold"]
Optimizer = Literal["sgd", "adam"]
Schedule = Literal["constant", "linear", "cosine"]
Personalization = Literal["auto", "ditto", "hierarchical"]
# Robust aggregation (Flower's strategies; jointcredit.privacy.robust) and the simulated
# poisoning it is measured against.
Aggregator = Literal["fedavg", "median", "trimmed", "krum", "multikrum", "bulyan"]
Attack = Literal["none", "sign-flip", "scale", "label-flip"]
# none; DP-SGD inside each institution (protects each borrower's row); Gaussian noise on the
# average of clipped institution updates (protects an institution's participation); Flower
# SecAgg+ (the coordinator sees only the sum of masked updates).
PrivacySetting = Literal["none", "dp-record", "dp-institution", "secagg"]
DpClipping = Literal["server", "client"]
# Simulated protocol attacks (client/adversary.py): what the coordinator's verification must
# catch. `secagg-dropout` crashes a node at SecAgg+'s masked-vector stage instead.
ADVERSARY_ATTACKS = (
    "unsigned",
    "tamper-array",
    "tamper-metric",
    "replay",
    "foreign-key",
    "impersonate",
    "key-swap",
    "truncate",
    "forge",
    "arrays-only",
    "secagg-dropout",
)


def parse_adversary(spec: str) -> dict[str, str]:
    """`"inst:attack,inst:attack"` -> {inst: attack}; unknown attacks fail loudly."""
    plan: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        inst, sep, attack = item.partition(":")
        if not sep or not inst or attack not in ADVERSARY_ATTACKS:
            raise ValueError(
                f"adversary {item!r}: expected institution:attack with attack one of "
                f"{', '.join(sorted(ADVERSARY_ATTACKS))}"
            )
        plan[inst] = attack
    return plan


def assumed_attackers(configured: int, attackers: int) -> int:
    """How many attackers Krum/MultiKrum/Bulyan guard against: the configured number, or when
    left at -1 the number actually simulated (at least 1, so the rules do something)."""
    return configured if configured >= 0 else max(attackers, 1)


def aggregator_quorum(aggregator: str, assumed: int) -> int:
    """The fewest institutions a robust rule can work with against `assumed` attackers."""
    need = {"krum": 2 * assumed + 3, "multikrum": 2 * assumed + 3, "bulyan": 4 * assumed + 3}
    return need.get(aggregator, 1)


def secagg_shares_and_threshold(shares: float, threshold: float, n: int) -> tuple[int, int]:
    """SecAgg+'s key shares and reconstruction threshold for `n` institutions. Flower's
    convention: a value <= 1 is a share of the institutions (of the shares). The number of
    shares is odd (each key's shares sit on a ring: itself and k neighbours each side) and at
    least 3."""
    num = round(shares * n) if shares <= 1 else int(shares)
    num = max(3, min(n, num))
    if num % 2 == 0:
        num = num - 1 if num > 3 else min(n, num + 1)
    wanted = math.ceil(threshold * num) if threshold <= 1 else int(threshold)
    return num, max(2, min(num, wanted))


def train_sample_size(fraction: float, n: int) -> int:
    """Institutions asked to train in one round of `n` under `fraction-train`: the share
    rounded up, at least one (Flower samples that many as `min_train_nodes`)."""
    return max(1, min(n, math.ceil(fraction * n - 1e-9)))
