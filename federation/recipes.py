"""Model recipes: the training settings each model family gets unless the caller chooses.

A run-config key left out, or set to `auto` (what `[tool.flwr.app.config]` ships), takes the
recipe of the run's model, adjusted for its privacy setting and aggregation rule. `RunSettings`
applies it while validating, so `simulate`, `sweep`, `flwr run .` and `link run` get the same
run from the same keys.

Why these recipes (docs/BENCHMARKS.md has the measurements):
- logistic scorecard: plain SGD on standardised columns for a fixed number of local steps per
  round, a linearly decaying learning rate and server momentum (FedAvgM). Per-client Adam moves
  rare, lender-specific weights by about the learning rate whatever their gradient, so the
  average stops following the pooled gradient; one epoch each would let the largest lender's
  drift dominate.
- binned scorecard: the logistic scorecard's recipe, on its standardised WOE columns.
- MLP: one local epoch of Adam per round with SCAFFOLD's drift correction. SCAFFOLD's control
  variates are each institution's mean gradient, neither noised, clipped, masked nor screened,
  so under a privacy setting or a robust rule the MLP falls back to FedAvgM.
- institution-level DP: Flower's accountant covers plain, equally weighted FedAvg only.
- gradient-boosted trees exchange histograms, not weights: no strategy or local optimiser
  applies, so its recipe keys only fill the fields (the trees' own keys are plain settings).
"""

from __future__ import annotations

from typing import Any, Final

AUTO: Final = "auto"
# The run-config keys a recipe decides (the only keys that accept `auto`).
RECIPE_KEYS: Final = (
    "strategy",
    "optimizer",
    "learning-rate",
    "lr-schedule",
    "local-steps",
    "server-momentum",
)

_LOGISTIC: Final[dict[str, Any]] = {
    "strategy": "fedavgm",
    "optimizer": "sgd",
    "learning-rate": 0.3,
    "lr-schedule": "linear",
    "local-steps": 36,
    "server-momentum": 0.7,
}
_RECIPES: Final[dict[str, dict[str, Any]]] = {
    "logreg": _LOGISTIC,
    "mlp": {
        "strategy": "scaffold",
        "optimizer": "adam",
        "learning-rate": 0.003,
        "lr-schedule": "linear",
        "local-steps": 0,
        "server-momentum": 0.7,  # unused by SCAFFOLD; FedAvgM's when the MLP is given it
    },
    # The binned scorecard is a logistic regression too, on standardised WOE columns.
    "scorecard": _LOGISTIC,
    "gbdt": {
        "strategy": "fedavg",
        "optimizer": "sgd",
        "learning-rate": 0.3,
        "lr-schedule": "constant",
        "local-steps": 0,
        "server-momentum": 0.0,
    },
}


def recipe(model: str, privacy: str = "none", aggregator: str = "fedavg") -> dict[str, Any]:
    """The recipe's value of every key in `RECIPE_KEYS` (an unknown model gets the scorecard's:
    the settings' own validation names the bad model)."""
    chosen = dict(_RECIPES.get(model, _RECIPES["logreg"]))
    if chosen["strategy"] == "scaffold" and (privacy != "none" or aggregator != "fedavg"):
        chosen.update({"strategy": "fedavgm", "server-momentum": 0.5})
    if privacy == "dp-institution":
        chosen["strategy"] = "fedavg"
    return chosen


def described(model: str) -> str:
    """One line for help texts: `strategy fedavgm, optimizer sgd, ...`."""
    return ", ".join(f"{k} {v}" for k, v in _RECIPES[model].items())


def models() -> tuple[str, ...]:
    return tuple(_RECIPES)
