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

The model itself is `auto` unless chosen (`auto_model`): gradient-boosted trees, the best
model measured on the SBA lenders that keeps `make demo` under 2 minutes (README's headline
table), unless the run asks for what only a model trained by weight updates has (DP, a
robust rule, simulated poisoning, a local optimiser's or DP's settings, rounds): then the
logistic scorecard, the default before trees, so such runs behave as they always did.
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

# Keys that also take `auto`: the recipe keys and the model.
AUTO_KEYS: Final = (*RECIPE_KEYS, "model")
AUTO_TREES: Final = "gbdt"
AUTO_WEIGHTS: Final = "logreg"
# Set to other than their defaults, these say which kind of model the run means.
TREE_KEYS: Final = (
    "trees",
    "max-depth",
    "max-bins",
    "tree-learning-rate",
    "min-child-weight",
    "reg-lambda",
    "min-split-loss",
    "personal-trees",
)
# Keys that mean nothing without DP.
DP_KEYS: Final = (
    "epsilon",
    "delta",
    "noise-multiplier",
    "max-grad-norm",
    "clipping-norm",
    "dp-clipping",
)
WEIGHT_KEYS: Final = (
    *RECIPE_KEYS,
    *DP_KEYS,
    "rounds",
    "lr-floor",
    "local-epochs",
    "batch-size",
    "standardize-indicators",
    "proximal-mu",
    "finetune-epochs",
    "fraction-train",
    "aggregator",
    "trim-fraction",
    "assumed-attackers",
    "attackers",
    "attack",
    "attack-scale",
    "secagg-clipping-range",
)
WEIGHT_VALUES: Final[dict[str, tuple[Any, ...]]] = {
    "privacy": ("dp-record", "dp-institution"),
    "personalization": ("ditto", "hierarchical"),
}

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


def auto_model(changed: dict[str, Any]) -> str:
    """The model `auto` means, given the run-config keys set to other than their defaults
    (and other than `auto`)."""
    if any(k in changed for k in TREE_KEYS):
        return AUTO_TREES
    if any(k in changed for k in WEIGHT_KEYS) or any(
        changed.get(k) in values for k, values in WEIGHT_VALUES.items()
    ):
        return AUTO_WEIGHTS
    return AUTO_TREES


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
