"""Institution-level differential privacy: protects whether an institution took part at all.

Flower does the work: `DifferentialPrivacyServerSideFixedClipping` (the coordinator clips each
institution's update to L2 norm S) or `DifferentialPrivacyClientSideFixedClipping` with
`fixedclipping_mod` on the institution's training handler (the update is clipped before it is
signed and sent), then Gaussian noise of std `z * S / n` on the average of the n updates,
accounted by Flower's RDP accountant (Google's dp-accounting) with a `max_epsilon` it enforces
before every release. This module only chooses `z` for a target budget and builds the
accountant.

Every institution takes part in every round (no sampling), so the accounting uses no
amplification: with 20 institutions the noise on the average is large, which is the honest
price of hiding a whole institution among 20.
"""

from __future__ import annotations

import math

from flwr.serverapp import (
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent


def accountant(institutions: int, delta: float, max_epsilon: float | None) -> RdpAccountant:
    return RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=institutions,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
            max_epsilon=max_epsilon,
        )
    )


def epsilon_after(noise: float, rounds: int, institutions: int, delta: float) -> float:
    acc = accountant(institutions, delta, None)
    acc.compose(GaussianPrivacyEvent(noise, institutions, institutions), count=rounds)
    return float(acc.get_epsilon(delta))


def calibrate_noise(epsilon: float, delta: float, rounds: int, institutions: int) -> float:
    """Smallest noise multiplier (within 0.1 %) whose epsilon after `rounds` releases of all
    `institutions` stays at or below `epsilon` (bisection: epsilon falls as noise grows)."""
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"institution-level DP needs a finite epsilon > 0, got {epsilon}")
    lo, hi = 0.01, 1.0
    while epsilon_after(hi, rounds, institutions, delta) > epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError(f"no noise multiplier reaches epsilon {epsilon}")
    while hi - lo > 1e-3 * hi:
        mid = (lo + hi) / 2
        if epsilon_after(mid, rounds, institutions, delta) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi
