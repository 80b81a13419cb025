"""The institution's side of personalisation (`jointcredit.models.personalize`).

`query.prior`: fit the final global model to own rows and send the squared deviation per
coefficient, keeping it in the node state for the final round. Final evaluate: under the
federation's hierarchical prior when the coordinator sent the deviation totals (subtracting
its own, so the prior is the *other* institutions'), otherwise Ditto with its strength chosen
on own validation rows.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context

from jointcredit.client.data import NodeData
from jointcredit.client.update import seed
from jointcredit.federation.protocol import (
    STATE_PRIOR,
    STATE_PRIOR_MODEL,
    STATE_PRIOR_MODEL_DIGEST,
    ModelMessage,
    ProtocolError,
)
from jointcredit.federation.settings import RunSettings
from jointcredit.models.personalize import (
    Personalized,
    personalize,
    personalize_hierarchical,
    prior_deviation,
)
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.training import TrainConfig


def _names(model: torch.nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def _digest(model: torch.nn.Module) -> str:
    return hashlib.sha256(
        b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    ).hexdigest()


def deviation_for_prior(
    model: torch.nn.Module, spec: PreprocessingSpec, node: NodeData, context: Context
) -> ArrayRecord:
    """This institution's squared deviation from `model`, kept for the final evaluate message
    (which subtracts it from the federation's sum)."""
    deviation = prior_deviation(model, node.matrix(spec, "train"), node.data.train.y)
    record = ArrayRecord({n: Array(d) for n, d in zip(_names(model), deviation, strict=True)})
    context.state[STATE_PRIOR] = record
    context.state[STATE_PRIOR_MODEL] = ConfigRecord({STATE_PRIOR_MODEL_DIGEST: _digest(model)})
    return record


def _own_deviation(
    context: Context, model: torch.nn.Module, x: np.ndarray, y: np.ndarray
) -> list[np.ndarray]:
    """What `query.prior` sent for this model, from the node's state; recomputed (the fit is
    deterministic) when the state was lost."""
    names = _names(model)
    kept, about = context.state.get(STATE_PRIOR), context.state.get(STATE_PRIOR_MODEL)
    if (
        isinstance(kept, ArrayRecord)
        and isinstance(about, ConfigRecord)
        and about.get(STATE_PRIOR_MODEL_DIGEST) == _digest(model)
        and set(kept.keys()) == set(names)
    ):
        return [kept[n].numpy() for n in names]
    return prior_deviation(model, x, y)


def personalize_final(
    ins: ModelMessage,
    context: Context,
    settings: RunSettings,
    node: NodeData,
    model: torch.nn.Module,
) -> Personalized:
    """The personalised copy of the final model, on own training rows only."""
    spec = node.spec(ins)
    x_train, y_train = node.matrix(spec, "train"), node.data.train.y
    if ins.prior is not None:
        names = _names(model)
        if ins.config.prior_count is None:
            raise ProtocolError("a prior sum without the number of institutions it covers")
        if set(ins.prior.keys()) != set(names):
            raise ValueError(f"prior totals name {sorted(ins.prior.keys())}, the model {names}")
        own = _own_deviation(context, model, x_train, y_train)
        others = [ins.prior[n].numpy() - d for n, d in zip(names, own, strict=True)]
        return personalize_hierarchical(model, x_train, y_train, others, ins.config.prior_count - 1)
    if ins.config.server_round is None or not ins.config.finetune_epochs:
        raise ProtocolError("a personalisation round needs its server round and epochs")
    node_seed = seed(settings, node.institution, ins.config.server_round, salt=1)
    fit, val = node.validation_split(node_seed)
    return personalize(
        model,
        (x_train[fit], y_train[fit]),
        (x_train[val], y_train[val]),
        TrainConfig.from_settings(settings, seed=node_seed, epochs=ins.config.finetune_epochs),
    )
