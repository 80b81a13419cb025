"""The model's reasons: the features that pushed an applicant the way its decision went, largest
push first, in plain language.

A reason is an entry of the batch's reason table (`code`, `text`, `kind`, `feature`,
`direction`) that applicants refer to by id; its contribution is the applicant's own, read from
the contribution matrix. Which way: an approved applicant's reasons are the features that
pushed toward approval (negative contributions, `toward_approval`), anyone else's those that
pushed toward default (positive ones, `toward_default`); each direction has its own text, so a
text never says a feature raised the risk when it lowered it, or the reverse. The ranking: the
largest push first, ties by feature name, last first (both forms take it from one ordering of
the features, `_by_name`); at most as many as the caller leaves room for among the policy's
`max_reasons`. It is applied to one applicant in Python (`one`) and to a batch with one numpy
sort (`many`, then one table entry per distinct direction and value among the reasons shown,
built feature by feature so that each reason costs one dict lookup). Property tests check both
rank alike (tests/test_rules.py).

A decline or referral still needs its principal reasons when nothing pushed toward default
(reasons are pushes against the portfolio-average applicant, and that applicant may itself be
above the lender's limit): `fallback` gives one that says so (`PROFILE_RISK`), followed by
the features that lowered the risk least, each with its toward-approval text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np

from jointcredit.service.languages import (
    DEFAULT,
    GENERIC_REASON,
    Language,
)
from jointcredit.service.policy import Policy, reason_value

TOWARD_DEFAULT, TOWARD_APPROVAL = "toward_default", "toward_approval"


class ModelReasons:
    """`level`: a feature's value as the model reads it (an unseen category as `UNSEEN`), which
    is what a reason names."""

    def __init__(
        self, features: list[str], policy: Policy, level: Callable[[str, Any], Any] | None = None
    ) -> None:
        self.features = features
        self.policy = policy
        self.level = level or _as_given
        self.width = min(policy.max_reasons, len(features))
        self._codes = [feature_code(name) for name in features]
        # Feature positions by name, last first: the tie-break.
        self._by_name = sorted(range(len(features)), key=lambda j: features[j], reverse=True)
        self._name_rank = {j: r for r, j in enumerate(reversed(self._by_name))}

    def text(
        self, name: str, value: object, toward_default: bool, language: Language = DEFAULT
    ) -> str:
        value = self.level(name, value)
        text_for = self.policy.feature_reasons.get(name)
        text = (
            None
            if text_for is None
            else text_for.render(value, toward_default=toward_default, language=language)
        )
        if text is not None:
            return text
        template = GENERIC_REASON[language][0 if toward_default else 1]
        return template.replace("{feature}", name).replace("{value}", reason_value(value, language))

    def _entry(
        self, j: int, value: object, toward_default: bool, language: Language
    ) -> dict[str, Any]:
        name = self.features[j]
        return {"code": self._codes[j], "text": self.text(name, value, toward_default, language),
                "kind": "model", "feature": name,
                "direction": TOWARD_DEFAULT if toward_default else TOWARD_APPROVAL}  # fmt: skip

    def one(
        self, applicant: Mapping[str, Any], contrib: Sequence[float], *, first_id: int,
        toward_default: bool, room: int, language: Language = DEFAULT,
    ) -> tuple[list[int], list[dict[str, Any]]]:  # fmt: skip
        """One applicant's reason ids (from `first_id`, at most `room`) and the entries they
        name: the features that pushed toward default (`toward_default`) or toward approval."""
        rank = self._name_rank
        sign = 1.0 if toward_default else -1.0
        pushes = ((sign * c, rank[j], j) for j, c in enumerate(contrib))
        shown = sorted((p for p in pushes if p[0] > 0), reverse=True)
        shown = shown[: min(self.width, max(room, 0))]
        entries = [self._entry(j, applicant[self.features[j]], toward_default, language)
                   for _, _, j in shown]  # fmt: skip
        return list(range(first_id, first_id + len(entries))), entries

    def many(
        self, columns: Mapping[str, Sequence[Any]], contrib: np.ndarray, *, first_id: int,
        toward_default: np.ndarray, room: np.ndarray, language: Language = DEFAULT,
    ) -> tuple[list[list[int]], list[dict[str, Any]]]:  # fmt: skip
        """`one` for each applicant (`toward_default`, `room`: one per applicant), with one
        table entry per distinct (direction, value) among each feature's reasons shown, in
        first-seen order per feature."""
        by_name = self._by_name
        pushes = np.where(toward_default[:, None], contrib, -contrib)
        order = np.argsort(-pushes[:, by_name], axis=1, kind="stable")
        top = np.asarray(by_name)[order[:, : self.width]]
        # Ranked descending with NaN last, so the positive ones are a prefix of each row, and
        # so is the room each row has.
        slots = np.arange(top.shape[1])
        shown = (np.take_along_axis(pushes, top, axis=1) > 0) & (slots < room[:, None])
        ids = np.full(top.shape, -1, dtype=np.int64)
        table: list[dict[str, Any]] = []
        for j in np.unique(top[shown]).tolist():
            rows, at = np.nonzero(shown & (top == j))
            name = self.features[j]
            level = self.level
            values = [level(name, v) for v in map(columns[name].__getitem__, rows.tolist())]
            ways = toward_default[rows].tolist()
            # (direction, type, value): 1, 1.0 and True are equal keys but not equal texts.
            keys = list(zip(ways, map(type, values), values, strict=True))
            known = dict.fromkeys(keys, 0)  # the distinct ones, in first-seen order
            for key in known:
                known[key] = first_id + len(table)
                table.append(self._entry(j, key[2], key[0], language))
            ids[rows, at] = list(map(known.__getitem__, keys))
        counts: list[int] = shown.sum(axis=1).tolist()
        per_row = cast(list[list[int]], ids.tolist())  # numpy's stubs: tolist() -> Any | int
        width = self.width
        return [r if c == width else r[:c] for r, c in zip(per_row, counts, strict=True)], table

    def fallback(
        self, applicant: Mapping[str, Any], contrib: Sequence[float], *, first_id: int,
        room: int, language: Language = DEFAULT,
    ) -> tuple[list[int], list[dict[str, Any]]]:  # fmt: skip
        """The reasons of a decline or referral whose features all pushed toward approval (or
        not at all): the profile's own risk, then the features that lowered it least (the
        smallest pushes toward approval; a feature that did not push is no reason)."""
        if room <= 0:
            return [], []
        rank = self._name_rank
        helped = sorted((c, rank[j], j) for j, c in enumerate(contrib) if c < 0)
        least = sorted(helped, reverse=True)[: min(self.width, room) - 1]
        entries = [profile_entry(self.policy, bool(least), language)]
        entries += [self._entry(j, applicant[self.features[j]], False, language)
                    for _, _, j in least]  # fmt: skip
        return list(range(first_id, first_id + len(entries))), entries


def feature_code(name: str) -> str:
    """A model reason's code: its feature's."""
    return f"F_{name.upper()}"


def _as_given(name: str, value: Any) -> Any:
    return value


def profile_entry(policy: Policy, followed: bool, language: Language = DEFAULT) -> dict[str, Any]:
    """The reason that the profile as a whole is above the lender's limit (`followed`: by the
    features that lowered the risk least), in the policy's words."""
    profile = policy.profile_risk
    return {"code": profile.code, "text": profile.pick(followed, language),
            "kind": "policy", "feature": None, "direction": TOWARD_DEFAULT}  # fmt: skip
