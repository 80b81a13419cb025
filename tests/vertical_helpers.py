"""A small trained vertical model for the tests of scoring vertical applicants: the label
party's ensemble and each feature party's split table, grown by the real exchange."""

from __future__ import annotations

from jointcredit.models.trees import BinLayout


def sub_layout(layout: BinLayout, cols: list[int]) -> BinLayout:
    return BinLayout(
        tuple(layout.n_bins[j] for j in cols),
        tuple(layout.missing[j] for j in cols),
        tuple(layout.n_special(j) for j in cols),
        tuple(layout.is_categorical(j) for j in cols),
    )
