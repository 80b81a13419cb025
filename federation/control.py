"""SCAFFOLD control variates on the wire, shared by the coordinator and the institutions.

Under `strategy = "scaffold"` a train message carries the global model and the federation's
control variate c in its one ArrayRecord (Flower's strategies accept exactly one per reply),
the control tensors under `protocol.CONTROL_PREFIX` + the parameter name. A reply carries the
trained model and the institution's new control variate c_i the same way, so Flower's FedAvg
of the replies yields both the next global model and the next c (the example-weighted mean of
the c_i: the federation's mean gradient), and the reply signature covers both. Evaluation
messages and artifacts carry the model alone.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from jointcredit.federation.protocol import CONTROL_PREFIX


def join(model: ArrayRecord, control: ArrayRecord) -> ArrayRecord:
    """One ArrayRecord with the model's arrays and the control tensors (same names, prefixed)."""
    if set(model.keys()) != set(control.keys()):
        raise ValueError("the control variate does not match the model's parameters")
    joined = ArrayRecord()
    for name, array in model.items():
        joined[name] = array
    for name, array in control.items():
        joined[CONTROL_PREFIX + name] = array
    return joined


def split(arrays: ArrayRecord) -> tuple[ArrayRecord, ArrayRecord]:
    """(model, control) from a joined record; control is empty when none was sent."""
    model, control = ArrayRecord(), ArrayRecord()
    for name, array in arrays.items():
        if name.startswith(CONTROL_PREFIX):
            control[name.removeprefix(CONTROL_PREFIX)] = array
        else:
            model[name] = array
    if control and set(control.keys()) != set(model.keys()):
        raise ValueError("the control variate does not match the model's parameters")
    return model, control


def zeros(model: ArrayRecord) -> ArrayRecord:
    """A zero control variate (SCAFFOLD's start) shaped like the model's arrays."""
    record = ArrayRecord()
    for name, array in model.items():
        record[name] = Array(np.zeros_like(array.numpy()))
    return record
