"""Decisions as the service holds them (`DecisionTable`, for one applicant or a batch alike)
and as it answers them (`DecisionTable.render`: `DecisionOut`'s JSON, the only place it is
built).

Column by column, with reasons, policy flags and unevaluated rules as ids into per-table lists
(`reason_table`, `rules`) and every feature's contribution as one matrix: per applicant a few
small integers instead of a few objects. That is also the columnar response's and the columnar
audit record's form (`columns`), and a stored record reads back as a table (`from_record`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jointcredit.service.languages import LANGUAGES, Language

if TYPE_CHECKING:  # the policy imports this module (through `joint`)
    from jointcredit.service.policy import Rule

Json = dict[str, Any]


def reason_objects(
    ids: Sequence[int],
    table: Sequence[Mapping[str, Any]],
    contributions: Sequence[float | None],
    features: Sequence[str],
) -> list[Json]:
    """Reasons given as ids into a reason table, each with its contribution (a model reason's
    from the applicant's row of contributions, in `features`' order; None for a policy one)."""
    out = []
    for i in ids:
        entry = table[i]
        feature = entry["feature"]
        value = None if entry["kind"] != "model" else contributions[features.index(feature)]
        out.append({**entry, "contribution": None if value is None else float(value)})
    return out


def rule_direction(rule: Rule) -> str:
    """Which way a rule pushes a decision: an adjustment by its points' sign, a decline or a
    referral against approval."""
    # Here, not at the top: reasons -> policy -> joint -> this module.
    from jointcredit.service.reasons import TOWARD_APPROVAL, TOWARD_DEFAULT

    return TOWARD_APPROVAL if rule.action == "adjust" and rule.points > 0 else TOWARD_DEFAULT


def rule_tables(
    order: Sequence[Rule],
) -> tuple[dict[Language, list[Json]], dict[Language, list[Json]]]:
    """Each rule as a policy flag and as a policy reason (which way it pushes:
    `rule_direction`, the same for every model), in the rules' `order`, in each language: a
    table's `rules` and the head of its `reason_table`, shared by every table and never
    changed."""
    flags = {
        lang: [{"code": r.code, "action": r.action, "text": r.text(lang), "points": r.points}
               for r in order]
        for lang in LANGUAGES
    }  # fmt: skip
    reasons = {
        lang: [{"code": r.code, "text": r.text(lang), "kind": "policy", "feature": None,
                "direction": rule_direction(r)} for r in order]
        for lang in LANGUAGES
    }  # fmt: skip
    return flags, reasons


@dataclass(slots=True)
class DecisionTable:
    """Decisions column by column. Id lists may be shared between rows: read, never mutate
    (`add_flag` replaces a row's lists)."""

    decision: list[str]
    probability_of_default: list[float]  # unrounded (the joint limit uses it)
    score: list[int]
    policy_score: list[int]
    stance: list[str]
    reason_ids: list[list[int]]
    reason_table: list[Json]  # ReasonOut's fields but `contribution`
    features: list[str]  # the contribution matrix's columns
    contributions: Any  # (applicants, features): an array, or lists when read back
    rules: list[Json]  # the policy's rules as flags (FlagOut's JSON)
    flag_ids: list[list[int]]  # rules each applicant raised, ids into `rules`
    not_evaluated_ids: list[list[int]]  # context not carried, fields the model lacks
    unknown_values: list[dict[str, str]]  # categories the model never saw
    out_of_range: list[dict[str, str]]  # numbers beyond what the model was trained on
    max_reasons: int | None = None  # the policy's: `add_flag` keeps each row within it
    language: Language = "en"  # of every text in the tables
    # Applicants who asked for a person to decide (PIPL Art. 24): under review whatever the
    # model and policy said. None: nobody asked.
    human_review: list[bool] | None = None

    def __len__(self) -> int:
        return len(self.decision)

    def reasons(self, k: int) -> list[Json]:
        return reason_objects(
            self.reason_ids[k], self.reason_table, self.contributions[k], self.features
        )

    def requested_review(self, k: int) -> bool:
        return self.human_review is not None and self.human_review[k]

    def status(self, k: int) -> str:
        return status(self.decision[k], self.requested_review(k))

    def policy_flags(self, k: int) -> list[Json]:
        return [self.rules[i] for i in self.flag_ids[k]]

    def rules_not_evaluated(self, k: int) -> list[str]:
        return [self.rules[i]["code"] for i in self.not_evaluated_ids[k]]

    def add_not_evaluated(self, k: int, rule: Json) -> None:
        """Say that applicant `k`'s request left `rule` (FlagOut's JSON) unevaluated."""
        self.rules = [*self.rules, rule]
        self.not_evaluated_ids[k] = [*self.not_evaluated_ids[k], len(self.rules) - 1]

    def add_flag(self, k: int, flag: Json, *, first_reason: bool) -> None:
        """Raise one more flag for applicant `k` (and, `first_reason`, give it as the first
        reason, the last one making room for it). The shared tables are copied, not changed."""
        self.rules = [*self.rules, flag]
        self.flag_ids[k] = [*self.flag_ids[k], len(self.rules) - 1]
        if first_reason:
            reason = {"code": flag["code"], "text": flag["text"], "kind": "policy",
                      "feature": None, "direction": None}  # fmt: skip
            self.reason_table = [*self.reason_table, reason]
            ids = [len(self.reason_table) - 1, *self.reason_ids[k]]
            self.reason_ids[k] = ids if self.max_reasons is None else ids[: self.max_reasons]

    def render(
        self, k: int, *, decision_id: str, reference: str | None, model: Json,
        policy_version: str, created_at: str, joint: Json | None = None,
    ) -> Json:  # fmt: skip
        """Applicant `k`'s decision as `DecisionOut`'s JSON, field for field (tested); built as
        a dict and serialised once, not validated by pydantic per decision."""
        decision = self.decision[k]
        pd_ = self.probability_of_default[k]
        return {
            "decision_id": decision_id,
            "status": self.status(k),
            "decision": decision,
            # None: not scored (a vertical model's feature party gave no routing)
            "probability_of_default": None if pd_ is None else round(pd_, 6),
            "score": self.score[k],
            "policy_score": self.policy_score[k],
            "stance": self.stance[k],
            "reasons": self.reasons(k),
            "policy_flags": self.policy_flags(k),
            "rules_not_evaluated": self.rules_not_evaluated(k),
            "unseen_values": self.unknown_values[k],
            "out_of_range": self.out_of_range[k],
            "model": model,
            "policy_version": policy_version,
            "reference": reference,
            "joint_credit": joint,
            "created_at": created_at,
            "language": self.language,
            "human_review_requested": self.requested_review(k),
        }

    def columns(self, ids: list[str], references: list[str | None]) -> Json:
        """The decisions as one list per output field (`ColumnarDecisions`; `contributions`
        stays a matrix, which orjson writes without a Python float per value)."""
        return {
            "decision_id": ids,
            "status": [self.status(k) for k in range(len(self.decision))],
            "decision": self.decision,
            "probability_of_default": [round(p, 6) for p in self.probability_of_default],
            "score": self.score,
            "policy_score": self.policy_score,
            "stance": self.stance,
            "reason_ids": self.reason_ids,
            "contributions": self.contributions,
            "flag_ids": self.flag_ids,
            "not_evaluated_ids": self.not_evaluated_ids,
            "unseen_values": self.unknown_values,
            "out_of_range": self.out_of_range,
            "reference": references,
            "human_review_requested": (
                [False] * len(self.decision) if self.human_review is None else self.human_review
            ),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DecisionTable:
        """A columnar batch's decisions from its audit record (`decisions`: the output
        columns, with `reason_table`, `contribution_features` and `rules`). Records written
        before reasons, flags and unevaluated rules were ids carry them in full instead; those
        written before numbers out of range referred an applicant have none; those written
        before texts came in two languages are in English."""
        columns, tables = record["decisions"], record
        if "reason_ids" not in columns:
            columns, tables = _as_ids(columns)
        return cls(
            decision=columns["decision"],
            probability_of_default=columns["probability_of_default"],
            score=columns["score"],
            policy_score=columns["policy_score"],
            stance=columns["stance"],
            reason_ids=columns["reason_ids"],
            reason_table=tables["reason_table"],
            features=tables["contribution_features"],
            contributions=columns["contributions"],
            rules=tables["rules"],
            flag_ids=columns["flag_ids"],
            not_evaluated_ids=columns["not_evaluated_ids"],
            unknown_values=columns["unseen_values"],
            out_of_range=columns.get("out_of_range") or [{} for _ in columns["decision"]],
            language=tables.get("language", "en"),
            human_review=columns.get("human_review_requested"),
        )


def status(decision: str, review_requested: bool = False) -> str:
    """A referral, or any decision the applicant asked a person to make, awaits review."""
    return "under_review" if decision == "refer" or review_requested else "decided"


def _as_ids(columns: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Output columns with reasons, flags and unevaluated rules in full per applicant, as the
    id form: (columns, tables). Each applicant's reasons and flags get their own table
    entries; a model reason's contribution goes into a matrix over the features named."""
    features = sorted({r["feature"] for rows in columns["reasons"] for r in rows
                       if r["kind"] == "model"})  # fmt: skip
    reason_table: list[Json] = []
    reason_ids: list[list[int]] = []
    contributions: list[list[float | None]] = []
    rules: list[Json] = []
    flag_ids: list[list[int]] = []
    not_evaluated_ids: list[list[int]] = []
    for reasons, flags, unevaluated in zip(
        columns["reasons"], columns["policy_flags"], columns["rules_not_evaluated"], strict=True
    ):
        row: list[float | None] = [None] * len(features)
        ids = []
        for r in reasons:
            ids.append(len(reason_table))
            reason_table.append({k: v for k, v in r.items() if k != "contribution"})
            if r["kind"] == "model":
                row[features.index(r["feature"])] = r["contribution"]
        reason_ids.append(ids)
        contributions.append(row)
        flag_ids.append(list(range(len(rules), len(rules) + len(flags))))
        rules.extend(flags)
        not_evaluated_ids.append(list(range(len(rules), len(rules) + len(unevaluated))))
        rules.extend({"code": code} for code in unevaluated)
    ids_form = {**columns, "reason_ids": reason_ids, "contributions": contributions,
                "flag_ids": flag_ids, "not_evaluated_ids": not_evaluated_ids}  # fmt: skip
    tables = {"reason_table": reason_table, "contribution_features": features, "rules": rules}
    return ids_form, tables
