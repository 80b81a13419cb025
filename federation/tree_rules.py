"""The run-settings rules of gradient-boosted trees (`model = gbdt`), kept beside the settings
model that applies them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jointcredit.federation.settings import RunSettings


def tree_problems(settings: RunSettings) -> list[str]:
    """Trees exchange gradient/hessian histograms, summed exactly (under secagg through
    SecAgg+): what acts on weight updates does not apply to them."""
    out: list[str] = []
    if settings.privacy in ("dp-record", "dp-institution"):
        out.append(
            f"privacy = {settings.privacy} with model = gbdt: no privacy accountant covers "
            "the trees' histograms; use privacy none or secagg (the coordinator then sees "
            "only their sums), or model logreg/mlp for DP"
        )
    if settings.aggregator != "fedavg":
        out.append(
            f"aggregator = {settings.aggregator} with model = gbdt: robust rules combine "
            "weight updates, the trees sum histograms exactly; use aggregator fedavg"
        )
    if settings.attackers or settings.attack != "none":
        out.append(
            f"attackers = {settings.attackers}, attack = {settings.attack} with model = gbdt: the "
            "simulated poisoning attacks alter weight updates; set neither"
        )
    if settings.personalization == "ditto":
        out.append(
            "personalization = ditto with model = gbdt: trees personalise with extra "
            "trees of their own (personal-trees); leave personalization auto"
        )
    return out
