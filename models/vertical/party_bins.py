"""A party's own bins in a vertical federation: each party codes its own columns with bins it
derives from its own rows alone (numeric edges from its fine-grid histogram, a vocabulary of
its own categories), and the bins never leave it; only their layout (how many codes, which is
missing) reaches the label party.

The joined rows' learner uses the same bins (every party's, side by side), so the vertical
model and the centralized one see identical codes (the lossless tests).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jointcredit.data.schema import Schema
from jointcredit.data.vertical_schema import VerticalSchema
from jointcredit.models.binning import BinningSpec, fine_bins, grid_histogram
from jointcredit.models.preprocessing import agree, summarize
from jointcredit.models.trees.bins import vocabularies


def party_schema(schema: VerticalSchema, party: str) -> Schema:
    """The party's own features (in its table's order) under the federation's label."""
    return schema.base.model_copy(
        update={"features": schema.party_features(party), "id": None, "protected": ()}
    )


def party_bins(
    frame: pd.DataFrame, schema: Schema, *, max_bins: int, max_categories: int, min_count: int
) -> BinningSpec:
    """Fine bins of `frame`'s columns of `schema` from these rows alone."""
    x = frame[list(schema.features)]
    summary = summarize(
        x, np.zeros(len(x)), schema, max_categories=max_categories, min_count=min_count
    )
    spec = agree([summary], schema, max_categories=max_categories, min_count=min_count)
    return fine_bins(grid_histogram(x, schema), schema, vocabularies(spec), max_bins=max_bins)


def joined_bins(parts: list[BinningSpec]) -> BinningSpec:
    """Every party's bins side by side (the label party's first): the joined rows' bins."""
    return BinningSpec(features=[f for p in parts for f in p.features])
