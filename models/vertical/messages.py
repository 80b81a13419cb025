"""What the label party and a feature party send each other while growing and scoring
vertical trees (in process now; a Flower exchange will carry the same contents).

Label party -> feature party: the encrypted packed (gradient, hessian, 1) of every aligned row,
once per tree (`EncryptedGradients`); per level, which requested node each row is in (the
instance space, `HistogramQuery`); for a split the feature party won, its local feature and
bin (`SplitOrder`: no raw value; the feature party's bin edges never leave it).
Feature party -> label party: per requested node, ciphertexts only (`EncryptedHistograms`);
for a split it won, its split id and which of the node's rows go left (`SplitDone`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jointcredit.models.trees.params import BinLayout


@dataclass(frozen=True)
class PartyColumns:
    """A feature party's columns as the label party sees them: how many bins each has, its
    missing code, special values and whether categorical; no name, no edge."""

    party: int
    layout: BinLayout


@dataclass(frozen=True)
class EncryptedGradients:
    public_key: bytes
    ciphertexts: bytes
    rows: int


@dataclass(frozen=True)
class HistogramQuery:
    """`slot` per row: which requested node it is in (-1: none), `n_slots` nodes."""

    slot: np.ndarray
    n_slots: int


@dataclass(frozen=True)
class EncryptedHistograms:
    """Per requested node, the serialized ciphertext column of its bin sums, feature j's code
    k at j * buckets + k."""

    nodes: tuple[bytes, ...]
    buckets: int


@dataclass(frozen=True)
class SplitOrder:
    """Split `rows` (the node's aligned rows) on local feature `feature` as the split finder
    chose: regular codes <= `threshold` (or the categories in `category_left`) left, missing
    by `default_left`, special bins by `special_left`'s bits."""

    feature: int
    threshold: int
    default_left: bool
    special_left: int
    category_left: np.ndarray
    rows: np.ndarray


@dataclass(frozen=True)
class SplitDone:
    split_id: int
    left: np.ndarray  # bool, per row of the order's `rows`
