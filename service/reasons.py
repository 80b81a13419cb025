"""The model's reasons: the features that pushed an applicant toward default, largest push
first, in plain language.

A reason is an entry of the batch's reason table (`code`, `text`, `kind`, `feature`) that
applicants refer to by id; its contribution is the applicant's own, read from the contribution
matrix. The ranking: positive contributions only, larger first, ties by feature name, last
first (both forms take it from one ordering of the features, `_by_name`); at most the policy's
`max_reasons`. It is applied to one applicant in Python (`one`) and to a batch with one numpy
sort (`many`, then one table entry per distinct value among the reasons shown, built feature by
feature so that each reason costs one dict lookup). Property tests check both rank alike
(tests/test_rules.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from jointcredit.service.policy import Policy


class ModelReasons:
    def __init__(self, features: list[str], policy: Policy, first_id: int) -> None:
        """`first_id`: the table's first model reason id (policy reasons come before)."""
        self.features = features
        self.policy = policy
        self.first_id = first_id
        self.width = min(policy.max_reasons, len(features))
        self._codes = [f"F_{name.upper()}" for name in features]
        # Feature positions by name, last first: the tie-break.
        self._by_name = sorted(range(len(features)), key=lambda j: features[j], reverse=True)
        self._name_rank = {j: r for r, j in enumerate(reversed(self._by_name))}

    def text(self, name: str, value: object) -> str:
        text_for = self.policy.feature_reasons.get(name)
        if text_for is not None:
            return text_for.render(value)
        return f"{name} = {value} raised the estimated risk"

    def _entry(self, j: int, value: object) -> dict[str, Any]:
        name = self.features[j]
        return {"code": self._codes[j], "text": self.text(name, value), "kind": "model",
                "feature": name}  # fmt: skip

    def one(
        self, applicant: Mapping[str, Any], contrib: Sequence[float]
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """One applicant's reason ids and the table entries they name."""
        rank = self._name_rank
        shown = sorted(((c, rank[j], j) for j, c in enumerate(contrib) if c > 0), reverse=True)
        shown = shown[: self.width]
        entries = [self._entry(j, applicant[self.features[j]]) for _, _, j in shown]
        return list(range(self.first_id, self.first_id + len(entries))), entries

    def many(
        self, columns: Mapping[str, Sequence[Any]], contrib: np.ndarray
    ) -> tuple[list[list[int]], list[dict[str, Any]]]:
        """Each applicant's reason ids and the table entries they name (one per distinct
        (feature, value) among the reasons shown, in first-seen order per feature)."""
        by_name = self._by_name
        order = np.argsort(-contrib[:, by_name], axis=1, kind="stable")
        top = np.asarray(by_name)[order[:, : self.width]]
        # Ranked descending with NaN last, so the positive ones are a prefix of each row.
        shown = np.take_along_axis(contrib, top, axis=1) > 0
        ids = np.full(top.shape, -1, dtype=np.int64)
        table: list[dict[str, Any]] = []
        for j in np.unique(top[shown]).tolist():
            rows, slots = np.nonzero(shown & (top == j))
            values = list(map(columns[self.features[j]].__getitem__, rows.tolist()))
            # (type, value): 1, 1.0 and True are equal keys but not equal texts.
            keys = list(zip(map(type, values), values, strict=True))
            known = dict.fromkeys(keys, 0)  # the distinct ones, in first-seen order
            for key in known:
                known[key] = self.first_id + len(table)
                table.append(self._entry(j, key[1]))
            ids[rows, slots] = list(map(known.__getitem__, keys))
        counts: list[int] = shown.sum(axis=1).tolist()
        per_row = cast(list[list[int]], ids.tolist())  # numpy's stubs: tolist() -> Any | int
        width = self.width
        return [r if c == width else r[:c] for r, c in zip(per_row, counts, strict=True)], table


def unseen(
    levels: Mapping[str, set[str]], columns: Mapping[str, Sequence[Any]]
) -> dict[int, dict[str, str]]:
    """Applicants with categories the model never saw: row -> {feature: value as text}. Text
    is compared as is; anything else (an integer code) as its text."""
    out: dict[int, dict[str, str]] = {}
    for name, known in levels.items():
        col = columns[name]
        new = [k for k, v in enumerate(col) if v is not None and v not in known
               and str(v) not in known]  # fmt: skip
        for k in new:
            out.setdefault(k, {})[name] = str(col[k])
    return out
