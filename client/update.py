"""One round of local training (shared by the plain and SecAgg+ paths) and what it reports."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from flwr.app import Context

from jointcredit.client.data import NodeData, simulated_institutions
from jointcredit.federation.choices import Attack
from jointcredit.federation.protocol import NodeConfig, TrainMetrics
from jointcredit.federation.settings import RunSettings
from jointcredit.models.learners import learner
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.training import DriftControl, TrainConfig
from jointcredit.privacy.robust import attacker_ids, poison_update


@dataclass(frozen=True)
class LocalUpdate:
    """The metrics to report; `withheld`: no update to send (privacy budget spent)."""

    metrics: TrainMetrics
    withheld: bool


def seed(settings: RunSettings, institution: str, server_round: int, salt: int = 0) -> int:
    """A node's training seed for a round: fixed by (run seed, round, institution)."""
    return (
        settings.seed * 1_000_003 + server_round * 7919 + salt + zlib.crc32(institution.encode())
    ) % (2**31)


def local_update(
    model: torch.nn.Module,
    spec: PreprocessingSpec,
    settings: RunSettings,
    node: NodeData,
    context: Context,
    *,
    server_round: int,
    mu: float,
    drift: DriftControl | None = None,
    persist: Callable[[], None] | None = None,
) -> LocalUpdate:
    """One round of local training of `model` (in place) on this institution's rows: plain,
    or DP-SGD under record-level DP; in a simulated attack, poisoned. `persist`: writes the
    institution's durable state (the DP ledger, once the round's steps are recorded)."""
    global_params = [p.detach().clone() for p in model.parameters()] if mu > 0 else None
    attack = simulated_attack(settings, node, NodeConfig.parse(context.node_config))
    poisons_update = attack in ("sign-flip", "scale")
    global_state = (
        {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}
        if poisons_update
        else {}
    )
    y = node.data.train.y
    x = node.matrix(spec, "train")
    labels = 1 - y if attack == "label-flip" else y
    cfg = TrainConfig.from_settings(
        settings,
        seed=seed(settings, node.institution, server_round),
        server_round=server_round,
        mu=mu,
    )
    metrics = TrainMetrics(
        num_examples=len(y),
        # Flower's accounted institution-level DP averages institutions equally.
        unit_weight=1.0 if settings.privacy == "dp-institution" else None,
    )
    if settings.privacy == "dp-record":
        from jointcredit.client.record_dp import record_dp_round  # Opacus: only when used

        dp = record_dp_round(
            model,
            x,
            labels,
            cfg,
            settings,
            context.state,
            global_params=global_params,
            persist=persist,
        )
        metrics = metrics.model_copy(update=dp.reported())
        if dp.steps == 0:
            # Budget spent: the institution stops contributing. Its signed reply carries no
            # update, only its accounting, so the coordinator can say who stopped and when.
            return LocalUpdate(metrics.model_copy(update={"num_examples": 0}), withheld=True)
        loss = dp.loss
    else:
        loss = learner(settings.model).fit(
            model, x, labels, cfg, global_params=global_params, drift=drift
        )
    if poisons_update:
        trained = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        poisoned = poison_update(global_state, trained, attack, settings.attack_scale)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in poisoned.items()})
    return LocalUpdate(metrics.model_copy(update={"train_loss": loss}), withheld=False)


def simulated_attack(settings: RunSettings, node: NodeData, node_config: NodeConfig) -> Attack:
    """The poisoning this node plays in a simulated attack (`none` for honest nodes). It signs
    its poisoned update with its own valid key: only the aggregation rule can stop it."""
    if settings.attack == "none" or settings.attackers == 0:
        return "none"
    everyone = simulated_institutions(settings, node_config)
    attackers = attacker_ids(everyone, settings.attackers, settings.seed)
    return settings.attack if node.institution in attackers else "none"
