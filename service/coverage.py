"""What the model was trained on, and the applicants outside it.

The binned scorecard's artifact records each numeric feature's training span (`binning.json`'s
`spans`: the values the federation's rows covered, trimmed by at least 10 rows and 0.1 % at
each end, read from the summed fine-grid histogram its bins came from; models/binning/grid.py),
and so does the trees' (below): a number beyond it is out of range. Models without one
(logistic, MLP, artifacts written before spans were recorded) have only what the agreed
preprocessing records: per categorical feature the federation's vocabulary, and per numeric
feature the mean and standard deviation of its (transformed) values, no minimum or maximum.
So:

- a category outside the vocabulary is unseen (the preprocessing would score it as `__other__`,
  the level that stands for every rare or unknown value);
- a number is out of range when its standardised value lies beyond the preprocessing's clip
  (`clip` standard deviations, 5 by default): the model sees every such value as the clip's
  edge, so it cannot tell it from the edge, let alone from more extreme values. The span is
  reported in the feature's own units, within the schema's `min`/`max`.

Gradient-boosted trees read bin codes (the artifact's signed `bins.json`): a category outside
the bins' levels falls in the bin of every other value, so it is unseen. The bins record each
numeric feature's edges and no range (the outermost edges are inner quantiles of the training
values), so the trees' model card records the same trimmed training span as the binned
scorecard's `binning.json`, from the same summed fine-grid histogram their bins came from
(`spans`). Tree artifacts written before it existed fall back to the agreed preprocessing
beside the bins: the same `clip` standard deviations as the other models'. Trees score any
value beyond the outermost edges as those edges' bins.

Either refers the applicant (service/rules.py) with one reason per such feature, from the
policy's `[outside_training]` texts. Both checks are defined once, over one applicant's values
(`one`) and over a batch's columns (`many`), and the reasons once for both (`explain`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jointcredit.data.schema import FeatureSpec
from jointcredit.models.binning.encoding import WoeFeature
from jointcredit.models.binning.spec import OTHER, BinningSpec, CategoricalBins
from jointcredit.models.binning.table import BinningTable
from jointcredit.models.preprocessing import (
    CategoricalFeature,
    NumericFeature,
    PreprocessingSpec,
)
from jointcredit.service.languages import DEFAULT, Language
from jointcredit.service.policy import UNSEEN, OutsideTraining, reason_value, show_value

Found = dict[str, str]  # feature -> the applicant's value, as text


def to_units(t: float, transform: str) -> float:
    """A transformed value back in the feature's units (the inverse of the signed log1p)."""
    if transform == "log1p":
        return math.copysign(math.expm1(min(abs(t), 700.0)), t)
    return t


def numeric_span(
    f: NumericFeature, clip: float, bounds: FeatureSpec | None = None
) -> tuple[float, float]:
    """The values a numeric feature's preprocessing represents without clipping, in its own
    units, within the schema's `min`/`max` when given."""
    lo = to_units(f.mean - clip * f.std, f.transform)
    hi = to_units(f.mean + clip * f.std, f.transform)
    return _within(lo, hi, bounds)


def _within(lo: float, hi: float, bounds: FeatureSpec | None) -> tuple[float, float]:
    if bounds is not None:
        lo = lo if bounds.min is None else max(lo, bounds.min)
        hi = hi if bounds.max is None else min(hi, bounds.max)
    return lo, hi


class Coverage:
    def __init__(
        self,
        spec: PreprocessingSpec,
        schema: Mapping[str, FeatureSpec],
        texts: OutsideTraining,
        *,
        bins: BinningSpec | None = None,
        binning: BinningTable | None = None,
        spans: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.texts = texts
        self.order = [f.name for f in spec.features]
        self.levels = {
            f.name: set(f.categories) for f in spec.features if isinstance(f, CategoricalFeature)
        }
        # A binned scorecard's categories: its groups' levels (its numbers fall in open-ended
        # outer bins, the binned model's own answer to values beyond training).
        for f in spec.features:
            if isinstance(f, WoeFeature) and isinstance(f.bins, CategoricalBins):
                self.levels[f.name] = {v for g in f.bins.groups for v in g if v != OTHER}
        # Trees: the categories their bins tell apart.
        for b in bins.features if bins is not None else ():
            if isinstance(b, CategoricalBins):
                self.levels[b.name] = {v for g in b.groups for v in g if v != OTHER}
        self.spans = {
            f.name: numeric_span(f, spec.clip, schema.get(f.name))
            for f in spec.features if isinstance(f, NumericFeature)
        }  # fmt: skip
        # A recorded training span (the binned scorecard's, the trees'), within the schema's
        # min/max.
        recorded = {**(binning.spans if binning is not None else {}), **(spans or {})}
        for name, (lo, hi) in recorded.items():
            self.spans[name] = _within(lo, hi, schema.get(name))
        # A feature's special codes (e.g. 96 = "unknown", where the schema or the agreed
        # preprocessing declares them) are codes every model reads on their own, never
        # magnitudes: never out of range.
        self.codes = {
            f.name: frozenset(map(float, getattr(f, "special", ())))
            | frozenset(schema[f.name].special if f.name in schema else ())
            for f in spec.features
        }

    def level(self, name: str, value: Any) -> Any:
        """`value` as the model reads it: `UNSEEN` for a category outside its levels (the
        preprocessing's `__other__`), anything else as it is."""
        known = self.levels.get(name)
        if known is None or value is None or value != value or value in known:
            return value
        return value if str(value) in known else UNSEEN

    def one(self, applicant: Mapping[str, Any]) -> tuple[Found, Found]:
        """(unseen categories, numbers out of range) of one applicant."""
        unseen: Found = {}
        for name, known in self.levels.items():
            v = applicant[name]
            if v is not None and v == v and v not in known and str(v) not in known:
                unseen[name] = str(v)
        beyond: Found = {}
        for name, (lo, hi) in self.spans.items():
            v = applicant[name]
            if v is not None and not lo <= v <= hi and v == v and v not in self.codes[name]:
                beyond[name] = show_value(v)  # (NaN is missing)
        return unseen, beyond

    def many(self, columns: Mapping[str, Sequence[Any]], n: int) -> tuple[list[Found], list[Found]]:
        """`one` for each applicant of a batch. Text is compared as is; anything else (an
        integer code) as its text; None and NaN are missing, as the preprocessing reads them."""
        unseen: list[Found] = [{} for _ in range(n)]
        for name, known in self.levels.items():
            col = columns[name]
            # The distinct values first (one C pass): most batches have no new one.
            new = {v for v in set(col) - known
                   if v is not None and v == v and str(v) not in known}  # fmt: skip
            if new:
                for k, v in enumerate(col):
                    if v in new:
                        unseen[k][name] = str(v)
        beyond: list[Found] = [{} for _ in range(n)]
        for name, (lo, hi) in self.spans.items():
            col = columns[name]
            values = np.array(col, dtype=np.float64)  # None -> NaN, never outside
            outside = (values < lo) | (values > hi)
            if self.codes[name]:
                outside &= ~np.isin(values, list(self.codes[name]))
            for k in np.flatnonzero(outside).tolist():
                beyond[k][name] = show_value(col[k])
        return unseen, beyond

    def explain(
        self, unseen: Sequence[Found], beyond: Sequence[Found], first_id: int,
        language: Language = DEFAULT,
    ) -> tuple[list[list[int]], list[dict[str, Any]]]:  # fmt: skip
        """Each applicant's reasons for its referral (ids from `first_id`, in feature order)
        and the table entries they name, one per distinct (feature, value)."""
        ids: list[list[int]] = []
        table: list[dict[str, Any]] = []
        known: dict[tuple[str, str], int] = {}
        none: list[int] = []
        for new, out in zip(unseen, beyond, strict=True):
            if not new and not out:
                ids.append(none)
                continue
            row = []
            for name in self.order:
                value = new.get(name, out.get(name))
                if value is None:
                    continue
                key = (name, value)
                if key not in known:
                    known[key] = first_id + len(table)
                    table.append(self.entry(name, value, name in new, language))
                row.append(known[key])
            ids.append(row)
        return ids, table

    def entry(self, name: str, value: str, unseen: bool, language: Language) -> dict[str, Any]:
        """The referral reason for `name`'s `value` (as the applicant's found values show it),
        in `language`. An unseen category is named as the level the model read it as, never
        as the applicant's text."""
        if unseen:
            text = self.texts.unseen(language)
            value = reason_value(UNSEEN, language)
        else:
            lo, hi = self.spans[name]
            text = self.texts.out_of_range(language).replace("{low}", show_value(lo))
            text = text.replace("{high}", show_value(hi))
        text = text.replace("{feature}", name).replace("{value}", value)
        return {"code": self.texts.code, "text": text, "kind": "policy", "feature": name,
                "direction": None}  # fmt: skip
