"""The adverse-action notice of a decision (`GET /v1/decisions/{id}/notice`): what a declined
or referred applicant, or one whose decision awaits the person they asked for, is told.

At most four principal reasons: the policy rules that declined or referred the application
first (each named), then the decision's other reasons by contribution toward default; the
score and what its band means (the policy's `[notice]` texts); what the applicant can do (ask
for a manual review, have wrong data corrected); and where a review stands, with its history.
In the language asked for (`?lang=` over `Accept-Language`), told again from what the audit
log keeps (`Decider.retell`), whatever language the decision was made in.

An approved decision that nobody is to review has no notice (409). Reading a notice is not
a decision and changes nothing, so it is not a chained entry (a read would otherwise take the
audit log's write lock and let any caller grow the chain); each read counts against the API
key's allowance of expensive reads (service/limits.py), as it may parse a batch's record.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from jointcredit.service.audit import AuditLog, DecisionRow
from jointcredit.service.errors import Conflict, Invalid, NotFound
from jointcredit.service.languages import (
    EXPOSURE_CODE,
    EXPOSURE_UNAVAILABLE,
    Language,
    LanguageError,
    negotiate,
)
from jointcredit.service.limits import ReadLimits
from jointcredit.service.policy import Policy
from jointcredit.service.policy_texts import ConsentProblem
from jointcredit.service.records import Responses
from jointcredit.service.tables import AuditRow

MAX_PRINCIPAL = 4  # ECOA/Reg B: four principal reasons at most
Json = dict[str, Any]


def notice_language(lang: str | None, accept: str | None) -> Language | None:
    """`?lang=` (a language tag, e.g. zh-CN) when given, else the Accept-Language header's;
    a 422 naming the parameter when it accepts no language the service has."""
    field, value = ("lang", lang) if lang is not None else ("Accept-Language", accept)
    try:
        return negotiate(value)
    except LanguageError as exc:
        raise Invalid(field, str(exc)) from None


class Teller(Protocol):
    """What a notice needs of the decider that made the decision: its policy, and its reasons
    told again in another language (service/decide.py `Decider`, service/vertical_decide.py
    `VerticalDecider`)."""

    policy: Policy

    def retell(
        self, reasons: Sequence[Mapping[str, Any]], applicant: Mapping[str, Any],
        language: Language,
    ) -> list[dict[str, Any]]: ...  # fmt: skip


class NoticeService:
    def __init__(
        self, audit: AuditLog, decider: Teller, responses: Responses, reads: ReadLimits
    ) -> None:
        self.audit, self.decider, self.responses, self.reads = audit, decider, responses, reads
        self.policy: Policy = decider.policy

    async def notice(
        self, decision_id: str, institution: str, key_id: str, language: Language | None
    ) -> Json:
        """Read in a worker thread; a read that must parse a batch's record counts against
        the key's limits (as progress reads do)."""
        args = (decision_id, institution, language)
        if self.responses.holds(decision_id):
            try:
                return await asyncio.to_thread(self._notice, *args, False)
            except _Expensive:
                pass
        async with self.reads.expensive(key_id):
            return await asyncio.to_thread(self._notice, *args, True)

    def _notice(
        self, decision_id: str, institution: str, asked: Language | None, expensive: bool
    ) -> Json:
        row, response = self._find(decision_id, institution)
        requested = bool(response.get("human_review_requested"))
        status = row.status if row is not None else response["status"]
        if response["decision"] == "approve" and status == "decided" and not requested:
            raise Conflict(
                f"decision {decision_id} was approved without review: a notice is given for a "
                "declined or referred application, or one awaiting the review its applicant "
                "asked for"
            )
        lang = self.policy.answers_in(asked)
        reasons = response["reasons"]
        if lang != response.get("language", "en"):
            was = response.get("language", "en")
            reasons = self._retell(decision_id, row, reasons, was, lang, expensive)
        texts = self.policy.notice
        deciding = [f["code"] for f in response["policy_flags"]
                    if f["action"] in ("decline", "refer")]  # fmt: skip
        outside = self.policy.outside_training.code
        if any(r["code"] == outside for r in reasons):  # values the model was not trained on
            deciding.insert(0, outside)
        at = response["created_at"]
        fill = {"decision_id": decision_id}
        return {
            "decision_id": decision_id, "language": lang, "decision": response["decision"],
            "decided_by": deciding, "principal_reasons": principal(reasons, deciding),
            "score": self._score(response["score"], lang),
            "human_review": texts.human_review.pick(lang) if requested else None,
            "options": [
                {"action": "manual_review", "text": _fill(texts.manual_review.pick(lang), fill)},
                {"action": "correct_data", "text": _fill(texts.correct_data.pick(lang), fill)},
            ],
            "review": self._review(row, response, status, requested, lang),
            "created_at": at,
        }  # fmt: skip

    def _find(self, decision_id: str, institution: str) -> tuple[DecisionRow | None, Json]:
        row = self.audit.get(decision_id)
        if row is None:
            found = self.responses.in_batch(decision_id)  # columnar, decided at once
            if found is None or found[0] != institution:
                raise NotFound("no such decision")  # never confirm another's id
            return None, found[1]
        if row.institution != institution:
            raise NotFound("no such decision")
        return row, self.responses.of(row)

    def _score(self, score: int | None, lang: Language) -> Json | None:
        if score is None:  # not scored: a vertical model's feature party gave no routing
            return None
        bands = self.policy.bands()
        k = next((k for k, b in enumerate(bands) if score >= b.min_score), len(bands) - 1)
        band = bands[k]
        high = 950 if k == 0 else bands[k - 1].min_score - 1
        scale = _fill(self.policy.notice.scale.pick(lang), {"score": str(score)})
        text = band.text_zh if lang == "zh" else band.text
        return {"score": score, "band_min": band.min_score, "band_max": high,
                "text": f"{scale} {text}" if lang == "en" else f"{scale}{text}"}  # fmt: skip

    def _review(
        self, row: DecisionRow | None, response: Json, status: str, requested: bool,
        lang: Language,
    ) -> Json:  # fmt: skip
        texts = self.policy.notice
        at = response["created_at"]
        history = [{"stage": "received", "at": at}, {"stage": "scored", "at": at}]
        went = requested or response["decision"] == "refer"
        if went:
            history.append({"stage": "under_review", "at": at})
        final = None if row is None else row.final_decision
        if row is None and status == "decided":
            final = response["decision"]
        if status == "decided":
            history.append({"stage": "decided", "at": at if row is None else row.updated_at})
        if status == "under_review":
            text = texts.under_review.pick(lang)
        elif went:
            outcome = texts.outcomes[final or "refer"].pick(lang)
            text = _fill(texts.reviewed.pick(lang), {"at": history[-1]["at"], "outcome": outcome})
        else:
            text = _fill(texts.decided.pick(lang), {"at": at})
        return {"requested_by_applicant": requested, "status": status, "final_decision": final,
                "reviewed": went and status == "decided", "text": text,
                "history": history}  # fmt: skip

    def _retell(
        self, decision_id: str, row: DecisionRow | None, reasons: list[Json], was: Language,
        lang: Language, expensive: bool,
    ) -> list[Json]:  # fmt: skip
        """The reasons in `lang`, from the applicant's features as audited; the consent and
        exposure reasons the decider does not write, by their texts in either language."""
        features = self._features(decision_id, row, expensive)
        told = self.decider.retell(reasons, features, lang)
        consent = self.policy.consent
        out = []
        for r in told:
            text = r["text"]
            if r["code"] == consent.code:
                for problem in get_args(ConsentProblem):
                    if consent.why(problem, was) == text:
                        text = consent.why(problem, lang)
            elif r["code"] == EXPOSURE_CODE and text.startswith(EXPOSURE_UNAVAILABLE[was]):
                text = EXPOSURE_UNAVAILABLE[lang] + text[len(EXPOSURE_UNAVAILABLE[was]) :]
            out.append({**r, "text": text})
        return out

    def _features(self, decision_id: str, row: DecisionRow | None, expensive: bool) -> Json:
        """The applicant's features as the decision's chained entry keeps them (`expensive`:
        allowed to parse a batch's record, and to search for it)."""
        found = self.audit.entry("decision", decision_id)
        if found is not None:
            features: Json = json.loads(found[2])["features"]
            return features
        columnar = self.responses.columnar_features(decision_id)
        if columnar is not None:
            return columnar
        if not expensive:
            raise _Expensive
        # A batch of rows: its decisions' ids are in its record only. Until a review, the
        # view row's last entry is that record; after one, it is among the rows before.
        needle = f'%"decision_id":"{decision_id}"%'
        last = 0 if row is None else row.last_seq
        with Session(self.audit.engine) as s:
            text = s.scalars(
                select(AuditRow.payload).where(AuditRow.seq == last, AuditRow.kind == "batch",
                                               AuditRow.payload.like(needle))
            ).first()  # fmt: skip
            if text is None:
                text = s.scalars(
                    select(AuditRow.payload)
                    .where(AuditRow.seq < last, AuditRow.kind == "batch",
                           AuditRow.payload.like(needle))
                    .order_by(AuditRow.seq.desc())
                ).first()  # fmt: skip
        if text is None:
            raise NotFound("no such decision")
        payload = json.loads(text)
        k = next(k for k, d in enumerate(payload["decisions"])
                 if d["response"]["decision_id"] == decision_id)  # fmt: skip
        return {f: values[k] for f, values in payload["features"].items()}


class _Expensive(Exception):
    """This notice needs an expensive read."""


def principal(reasons: list[Json], deciding: list[str]) -> list[Json]:
    """At most MAX_PRINCIPAL reasons: those of the rules that decided first, in the decision's
    order, then the others by contribution toward default (reasons without one, the profile's
    own risk and adjustments, before the model's)."""
    first = [r for r in reasons if r["kind"] == "policy" and r["code"] in deciding]
    rest = [r for r in reasons if r not in first]
    rest.sort(key=lambda r: -(math.inf if r.get("contribution") is None else r["contribution"]))
    out = []
    for rank, r in enumerate([*first, *rest][:MAX_PRINCIPAL], start=1):
        policy = r["kind"] == "policy"
        out.append({"rank": rank, "code": r["code"], "text": r["text"], "kind": r["kind"],
                    "rule": r["code"] if policy else None, "decided": r["code"] in deciding,
                    "feature": r.get("feature"),
                    "contribution": r.get("contribution")})  # fmt: skip
    return out


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template
