"""The rules between run settings: what cannot work together (`combination_problems`) and
what cannot work with a given number of institutions (`count_problems`). Each problem is a
message naming the keys; `RunSettings` refuses settings with any (`SettingsError`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from jointcredit.data.sba import DATASETS as SBA_DATASETS
from jointcredit.federation.choices import (
    aggregator_quorum,
    assumed_attackers,
    parse_adversary,
    secagg_shares_and_threshold,
    train_sample_size,
)
from jointcredit.federation.faults import parse_faults
from jointcredit.federation.tree_rules import tree_problems

if TYPE_CHECKING:
    from jointcredit.federation.settings import RunSettings


def combination_problems(s: RunSettings) -> list[str]:
    """Settings that cannot work together, whatever the number of institutions."""
    out: list[str] = []
    if s.fairness_decline > s.fairness_approve:
        out.append(
            f"fairness-decline = {s.fairness_decline} is above fairness-approve = "
            f"{s.fairness_approve}: a policy declines below its approve cut-off"
        )
    if s.privacy in ("secagg", "dp-institution") and s.aggregator != "fedavg":
        out.append(
            f"aggregator = {s.aggregator} with privacy = {s.privacy}: a robust rule "
            f"needs each institution's own update, which {s.privacy} does not give the "
            "coordinator; use aggregator fedavg"
        )
    if s.privacy == "dp-institution" and s.strategy != "fedavg":
        out.append(
            f"strategy = {s.strategy} with privacy = dp-institution: Flower accounts "
            "only for plain, equally weighted FedAvg; use strategy fedavg (or auto)"
        )
    if s.privacy == "dp-institution" and math.isinf(s.epsilon):
        out.append("epsilon = inf with privacy = dp-institution: it needs a finite budget")
    if s.strategy == "scaffold" and (s.privacy != "none" or s.aggregator != "fedavg"):
        # Each reply's control variate is its institution's mean gradient, neither noised,
        # clipped, masked nor screened: it would bypass any of these settings.
        out.append(
            f"strategy = scaffold with privacy = {s.privacy}, aggregator = "
            f"{s.aggregator}: SCAFFOLD works only without privacy settings and with "
            "aggregator fedavg"
        )
    if s.fraction_train < 1:
        out += sampling_problems(s)
    if s.model == "gbdt":
        out += tree_problems(s)
    if s.resume and (s.model == "gbdt" or s.privacy == "secagg"):
        # Trees carry their ensemble and each node's margins, SecAgg+ its own round loop:
        # neither is checkpointed in a form a run can continue from.
        what = "model = gbdt" if s.model == "gbdt" else "privacy = secagg"
        out.append(f"resume with {what}: such a run cannot be resumed; start it again")
    if s.resume and not s.checkpoints:
        out.append("resume with checkpoints = false: a run resumes from its signed checkpoints")
    if s.personalization == "hierarchical" and not s.hierarchical_allowed:
        out.append(
            "personalization = hierarchical needs model logreg or scorecard, privacy none "
            "and aggregator fedavg: each institution's deviations reach the coordinator "
            "unnoised and unmasked, and the prior's fits are exact only for the convex "
            "logistic models"
        )
    if (s.attackers > 0) != (s.attack != "none"):
        out.append(
            f"attackers = {s.attackers} with attack = {s.attack}: set both (N "
            "attackers doing KIND) or neither"
        )
    if s.adversary:
        try:
            parse_adversary(s.adversary)
        except ValueError as exc:
            out.append(str(exc))
    if bool(s.trust_file) != bool(s.coordinator_key):
        out.append("trust-file and coordinator-key: set both (deployment) or neither")
    out += fault_problems(s)
    if s.trust_file and (s.adversary or s.attackers):
        # Deployed nodes refuse to misbehave on purpose: this would fail on every node.
        out.append(
            "adversary and attackers are simulation settings: a deployment (trust-file) "
            "cannot run them"
        )
    if s.hindsight_vintage and (s.data_dir or s.dataset not in SBA_DATASETS):
        out.append(
            f"hindsight-vintage with dataset = {s.data_dir or s.dataset}: the vintage "
            f"is the SBA approval year; it applies to {' and '.join(SBA_DATASETS)} only"
        )
    if s.hindsight_vintage and s.trust_file:
        out.append(
            "hindsight-vintage measures hindsight in simulations: a deployment "
            "(trust-file) reads each node's own file and schema, and must not use it"
        )
    if s.institutions > 0:
        out += count_problems(s, s.institutions, "institutions")
    return out


def sampling_problems(s: RunSettings) -> list[str]:
    """What cannot train on a sample of the institutions each round (`fraction-train` < 1)."""
    why = {
        "secagg": "SecAgg+'s key shares and threshold are set for every institution",
        "dp-institution": "Flower's accountant and the noise calibration assume every "
        "institution in every round (no amplification by sampling is accounted)",
    }
    out: list[str] = []
    if s.privacy in why:
        out.append(
            f"fraction-train = {s.fraction_train:g} with privacy = {s.privacy}: "
            f"{why[s.privacy]}; use fraction-train 1"
        )
    if s.strategy == "scaffold":
        # The server's c would be the mean over the round's sample and each c_i as old as
        # its institution's last round: not SCAFFOLD's control variates any more.
        out.append(
            f"fraction-train = {s.fraction_train:g} with strategy = scaffold: its control "
            "variates need every institution every round; use strategy fedavgm (the mlp "
            "recipe's is scaffold) or fraction-train 1"
        )
    if s.model == "gbdt":
        out.append(
            f"fraction-train = {s.fraction_train:g} with model = gbdt: every tree level "
            "needs every institution's histograms; use model logreg, mlp or scorecard"
        )
    return out


def count_problems(s: RunSettings, n: int, source: str) -> list[str]:
    """What cannot work with exactly `n` institutions (`source`: where the count comes
    from, for the message)."""
    out: list[str] = []
    f = assumed_attackers(s.assumed_attackers, s.attackers)
    need = aggregator_quorum(s.aggregator, f)
    sampled = train_sample_size(s.fraction_train, n)
    if sampled < need:
        # A robust rule screens the replies of one round: its quorum is the round's sample.
        asked = f"{n}" if sampled == n else f"{sampled} of {n} each round (fraction-train)"
        out.append(
            f"aggregator = {s.aggregator} against {f} attacker(s) needs at least "
            f"{need} institutions, the run has {asked} ({source})"
        )
    if s.min_institutions > n:
        out.append(
            f"min-institutions = {s.min_institutions} but the run has {n} institutions "
            f"({source}): no round could ever complete"
        )
    if s.attackers > n:
        out.append(f"attackers = {s.attackers} but the run has {n} institutions ({source})")
    if s.privacy == "secagg":
        if n < 3:
            out.append(
                f"privacy = secagg needs at least 3 institutions (each key is shared among "
                f"3 or more), the run has {n} ({source})"
            )
        else:
            shares, threshold = secagg_shares_and_threshold(s.secagg_shares, s.secagg_threshold, n)
            if threshold >= shares:
                out.append(
                    f"secagg-threshold = {s.secagg_threshold:g} with secagg-shares = "
                    f"{s.secagg_shares:g}: {threshold} of {shares} shares to rebuild a "
                    f"key, but SecAgg+ needs fewer than all of them ({n} institutions, "
                    f"{source})"
                )
    return out


def fault_problems(s: RunSettings) -> list[str]:
    """Simulated faults: a well-formed plan, in a simulation, where a round can go on without
    the institutions that dropped out."""
    if not s.faults:
        return []
    try:
        parse_faults(s.faults)
    except ValueError as exc:
        return [str(exc)]
    out: list[str] = []
    if s.trust_file:
        out.append(
            "faults is a simulation setting: a deployment (trust-file) cannot run it "
            "(its faults are real)"
        )
    if s.privacy == "secagg":
        out.append(
            "faults with privacy = secagg: SecAgg+ runs its own rounds; simulate its "
            "dropouts with adversary INSTITUTION:secagg-dropout"
        )
    if s.privacy == "dp-institution":
        out.append(
            "faults with privacy = dp-institution: Flower's accountant and noise assume "
            "every sampled institution's update is in the average"
        )
    return out
