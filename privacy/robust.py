"""Robust aggregation against poisoned institutions, and the simulated attacks to measure it.

The aggregators are Flower's own strategies (FedMedian, FedTrimmedAvg, Krum, MultiKrum,
Bulyan); this module only names them and says how many attackers each assumes. The attacks are
what a dishonest institution with a valid signing key can do - its updates verify, so update
signing cannot stop them; only the aggregation rule can:

- `sign-flip`: sends the global model moved against its honest update, `g - s * (w - g)`;
- `scale`: boosts its honest update, `g + s * (w - g)` (model-replacement style);
- `label-flip`: trains honestly on its rows with every label inverted (data poisoning).

Simulation only: which institutions attack is drawn from the run's seed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np

from jointcredit.federation.choices import Attack


def attacker_ids(institutions: Sequence[str], n: int, seed: int) -> list[str]:
    """The `n` attacking institutions of a simulated run, drawn with the run's seed (sorted)."""
    if not 0 <= n <= len(institutions):
        raise ValueError(f"{n} attackers but {len(institutions)} institutions")
    chosen = random.Random(seed * 7_919 + 13).sample(sorted(institutions), n)
    return sorted(chosen)


def poison_update(
    global_state: Mapping[str, np.ndarray],
    trained: Mapping[str, np.ndarray],
    attack: Attack,
    scale: float,
) -> dict[str, np.ndarray]:
    """The weights an attacking institution sends instead of `trained`."""
    if attack == "sign-flip":
        factor = -scale
    elif attack == "scale":
        factor = scale
    else:  # label-flip poisons the data, not the update; none sends the honest one
        return {k: np.asarray(v) for k, v in trained.items()}
    out: dict[str, np.ndarray] = {}
    for name, w in trained.items():
        g = np.asarray(global_state[name])
        out[name] = (g + factor * (np.asarray(w) - g)).astype(np.asarray(w).dtype)
    return out
