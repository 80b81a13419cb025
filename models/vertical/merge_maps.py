"""A vertical scorecard's merge maps (fine code -> coarse code per feature party feature): the
shape of the label party's coarse classing of the feature party's fine bins, which the feature
party keeps in its signed part to answer an applicant's coarse attribute (never its fine bin).

Each map is checked wherever it arrives (the label party's write-part request, a stored part):
one per feature, every fine code mapped, each to a coarse code, the codes 0..k-1 all used; and
by the feature party, against its own rows per fine bin, no finer than classing (`check_pooling`).
The label party sends them once its classing is done (the scorecard's coarse step), and again
with the write-part request, which must carry the same maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jointcredit.models.binning.classing import min_rows_for

# Coarse classing's smallest share of a feature's rows per attribute: the label party classes
# with it, and a feature party holds the maps it is sent to it (`check_pooling`).
MIN_BIN_SHARE = 0.05
# A scorecard feature party's features at most: its coarse pair tables grow with their
# square, and a served part answers one code per feature.
MAX_FEATURES = 256


def check_merge_maps(
    maps: Sequence[Sequence[int] | np.ndarray], n_bins: Sequence[int], names: Sequence[str]
) -> tuple[np.ndarray, ...]:
    """The maps as int64 arrays, or ValueError naming the feature and what is wrong."""
    if len(maps) != len(n_bins):
        raise ValueError(f"{len(maps)} merge maps for {len(n_bins)} features")
    out = []
    for raw, k_fine, name in zip(maps, n_bins, names, strict=True):
        m = np.asarray(raw)
        if m.ndim != 1 or len(m) != k_fine:
            raise ValueError(f"{name}: a merge map of {m.size} codes for {k_fine} fine bins")
        if m.size and m.dtype.kind not in "iu":
            raise ValueError(f"{name}: a merge map of {m.dtype}, not whole codes")
        m = m.astype(np.int64)
        if m.size and (m.min() < 0 or m.max() >= k_fine):
            raise ValueError(f"{name}: a coarse code outside 0..{k_fine - 1}")
        if np.unique(m).size != (int(m.max()) + 1 if m.size else 0):
            raise ValueError(f"{name}: coarse codes 0..{int(m.max())} not all used")
        out.append(m)
    return tuple(out)


def coarse_codes(fine: np.ndarray, maps: Sequence[np.ndarray]) -> np.ndarray:
    """(rows, features) fine codes -> the coarse codes their maps give."""
    columns = [m[fine[:, j].astype(np.int64)] for j, m in enumerate(maps)]
    return np.column_stack(columns) if columns else np.zeros((len(fine), 0), np.int64)


def coarse_rows(maps: Sequence[np.ndarray], rows: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per feature, its rows per coarse code, from its rows per fine code (`rows`)."""
    out = []
    for m, r, k in zip(maps, rows, n_coarse(maps), strict=True):
        held = np.zeros(k, np.int64)
        np.add.at(held, m, np.asarray(r, np.int64))
        out.append(held)
    return out


def n_coarse(maps: Sequence[np.ndarray]) -> tuple[int, ...]:
    """Each feature's number of coarse codes (k_j)."""
    return tuple(int(m.max()) + 1 if m.size else 0 for m in maps)


def check_pooling(
    maps: Sequence[np.ndarray],
    rows: Sequence[np.ndarray],
    regular: Sequence[int],
    min_share: float,
    names: Sequence[str],
    categorical: Sequence[bool],
) -> None:
    """No map finer than coarse classing gives (models/binning/classing.py), which a hostile
    label party could otherwise ask for to read fine bins back: every coarse code of regular
    fine bins holds at least `min_share` of the feature's rows (`rows`: per fine bin) unless
    it is the only one, each special value and missing keeps a coarse code of its own, and a
    numeric feature's regular fine bins are pooled only with their neighbours, in order (as
    classing pools them: no pairing of distant bins to single out one)."""
    for m, r, reg, name, cat in zip(maps, rows, regular, names, categorical, strict=True):
        plain, own = m[:reg], m[reg:]
        if len(set(own.tolist())) != len(own) or set(own.tolist()) & set(plain.tolist()):
            raise ValueError(f"{name}: special values and missing keep a coarse code each")
        steps = np.diff(plain)
        if not cat and plain.size and (plain[0] != 0 or np.any((steps != 0) & (steps != 1))):
            raise ValueError(f"{name}: a numeric feature's fine bins pool only with neighbours")
        codes = np.unique(plain)
        if len(codes) < 2:
            continue
        held = np.bincount(plain, weights=np.asarray(r[:reg], np.float64), minlength=len(m))
        least = min_rows_for(int(np.sum(r)), min_share)
        if small := [int(c) for c in codes if held[c] < least]:
            raise ValueError(
                f"{name}: coarse codes {small} hold under {min_share:.0%} of its rows, finer "
                "than classing"
            )
