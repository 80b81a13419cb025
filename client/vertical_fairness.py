"""The label party's fairness figures of a vertical model on its held-out aligned rows.

The protected attributes are the label party's own (its schema table's `protected`, read
beside its frame as `PartyData.groups`); they never enter a feature, a bin, a message to a
feature party or a model part. After training, the federated model's PDs of the held-out
rows, their labels and their groups give the figures through `models.fairness.centralized`,
the horizontal run's one computation; only the figures go into the `done` reply.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jointcredit.data.vertical_schema import VerticalSchema
from jointcredit.federation.fairness import Fairness
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.federation.vertical_fairness import check_names, cutoffs
from jointcredit.models.fairness import centralized, group_values


def check_groups(
    groups: pd.DataFrame | None, schema: VerticalSchema, settings: VerticalSettings
) -> None:
    """Refuse, before any work, what the coordinator would refuse in the `done` reply: an
    attribute with more groups than are measured, too many attributes, a name it cannot
    print (a ValueError naming the problem)."""
    if groups is not None and schema.protected and settings.fairness:
        values = group_values(groups, schema.protected)  # ValueError naming the attribute
        check_names(list(schema.protected), values)


def held_out_fairness(
    groups: pd.DataFrame | None,
    rows: np.ndarray,
    pd_: np.ndarray,
    y: np.ndarray,
    schema: VerticalSchema,
    settings: VerticalSettings,
) -> Fairness | None:
    """The figures of the held-out rows (`rows`: their positions in the label party's frame,
    in the order of `pd_` and `y`), or None with no protected attribute or fairness off."""
    if groups is None or not schema.protected or not settings.fairness:
        return None
    held = groups.iloc[np.asarray(rows, dtype=np.int64)].reset_index(drop=True)
    return centralized(pd_, np.asarray(y), held, schema.protected, cutoffs(settings))
