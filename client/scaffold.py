"""The institution's side of SCAFFOLD: its own control variate c_i, kept between rounds.

The federation's c arrives with the model (`jointcredit.federation.control`); every local
gradient is corrected by c - c_i (`jointcredit.models.training.DriftControl`), and the round's
mean gradient becomes the next c_i, kept in the node's Flower state and sent, signed, with the
trained model.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from flwr.app import Array, ArrayRecord, Context

from jointcredit.federation import control
from jointcredit.federation.protocol import STATE_SCAFFOLD
from jointcredit.models.training import DriftControl


def _tensors(record: ArrayRecord, names: Iterable[str]) -> list[torch.Tensor]:
    return [torch.from_numpy(record[name].numpy().copy()) for name in names]


def _record(names: Iterable[str], values: Iterable[torch.Tensor]) -> ArrayRecord:
    return ArrayRecord({n: Array(v.detach().numpy()) for n, v in zip(names, values, strict=True)})


def drift_control(
    model: torch.nn.Module, federation_control: ArrayRecord, context: Context
) -> tuple[DriftControl, bool]:
    """SCAFFOLD's correction c - c_i, and whether c_i was this institution's own: its mean
    gradient of the last round it trained in (zero before its first round, or when the node
    lost its state)."""
    names = [name for name, _ in model.named_parameters()]
    c = _tensors(federation_control, names)
    own = context.state.get(STATE_SCAFFOLD)
    if isinstance(own, ArrayRecord) and set(own.keys()) == set(names):
        c_i, kept = _tensors(own, names), True
    else:
        c_i, kept = [torch.zeros_like(t) for t in c], False
    return DriftControl([a - b for a, b in zip(c, c_i, strict=True)]), kept


def keep_and_join(
    model: torch.nn.Module, drift: DriftControl, arrays: ArrayRecord, context: Context
) -> ArrayRecord:
    """Keep this round's mean gradient as the next c_i and join it to the trained model."""
    if drift.mean_gradient is None:
        raise RuntimeError("local training did not record its mean gradient")
    own = _record([n for n, _ in model.named_parameters()], drift.mean_gradient)
    context.state[STATE_SCAFFOLD] = own
    return control.join(arrays, own)
