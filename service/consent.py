"""The consent registry (PIPL Art. 23: separate consent before an applicant's data goes to
another party): each institution's applicants' consents to a cross-party use of their data,
kept in the audit database (table `consents`) and changed only through chained entries, so
every add and revoke is in the hash chain.

A decision request that asks for the joint limit (a query of the other lenders' exposure, the
masked secure sum) carries `joint.consent_id`. The query runs only when that consent is the
caller's, for this applicant (`joint.applicant_id`, what the exposure query names the
applicant by) and purpose `exposure`, not expired and not revoked; otherwise the exposure rule
is not evaluated and the decision says which rule and why (`refuse_exposure`). Every request
reads the registry from the database, so a revoke stops the next query at once, in every
worker process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import inspect, select, tuple_
from sqlalchemy.orm import Session

from jointcredit.service.audit import AuditError, AuditLog, Entry
from jointcredit.service.chain import now
from jointcredit.service.decision import DecisionTable
from jointcredit.service.policy_texts import ConsentProblem, ConsentTexts
from jointcredit.service.records import CONSENT
from jointcredit.service.tables import AuditRow, Base, ConsentRow

# `exposure`: the lenders' secure sum (joint limits); `vertical`: a feature party's routing of
# the applicant through its splits (vertical scoring, asked of the platform, which checks it
# in its own registry).
Purpose = Literal["exposure", "vertical"]
PURPOSES: tuple[Purpose, ...] = ("exposure", "vertical")


class ConsentError(ValueError):
    """A consent that cannot be added or revoked; the message says why."""


@dataclass(frozen=True)
class Consent:
    institution: str
    consent_id: str
    applicant_ref: str
    purpose: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None

    def state(self, at: str) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= at:
            return "expired"
        return "valid"


def _consent(row: ConsentRow) -> Consent:
    return Consent(row.institution, row.consent_id, row.applicant_ref, row.purpose,
                   row.created_at, row.expires_at, row.revoked_at)  # fmt: skip


class ConsentRegistry:
    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        # An audit database created before the registry existed gets its table now.
        Base.metadata.create_all(audit.engine, tables=[Base.metadata.tables["consents"]])

    def add(
        self, institution: str, consent_id: str, applicant_ref: str, purpose: Purpose,
        expires_at: str | None = None,
    ) -> Consent:  # fmt: skip
        """Register a consent (`expires_at`: ISO 8601 UTC, as the log's times are written)."""
        at = now()
        if expires_at is not None and expires_at <= at:
            raise ConsentError(f"--expires {expires_at} is not in the future")
        row = {"institution": institution, "consent_id": consent_id,
               "applicant_ref": applicant_ref, "purpose": purpose, "created_at": at,
               "expires_at": expires_at, "revoked_at": None}  # fmt: skip
        payload = {"action": "add", **{k: v for k, v in row.items() if k != "institution"}}
        (seq,) = self.audit.append([Entry(CONSENT, consent_id, institution, payload, (), row)])
        if seq is None:
            raise ConsentError(f"{institution} already has a consent {consent_id}")
        return _consent(ConsentRow(**row))

    def revoke(self, institution: str, consent_id: str) -> Consent:
        at = now()
        change = {"institution": institution, "consent_id": consent_id, "revoked_at": at}
        payload = {"action": "revoke", "consent_id": consent_id, "revoked_at": at}
        (seq,) = self.audit.append([Entry(CONSENT, consent_id, institution, payload, (), change)])
        found = self.get(institution, consent_id)
        if seq is None or found is None:
            why = "has no consent" if found is None else "already revoked consent"
            raise ConsentError(f"{institution} {why} {consent_id}")
        return found

    def get(self, institution: str, consent_id: str) -> Consent | None:
        with Session(self.audit.engine) as s:
            row = s.get(ConsentRow, (institution, consent_id))
            return None if row is None else _consent(row)

    def all(self, institution: str) -> list[Consent]:
        with Session(self.audit.engine) as s:
            rows = s.scalars(
                select(ConsentRow)
                .where(ConsentRow.institution == institution)
                .order_by(ConsentRow.created_at, ConsentRow.consent_id)
            )
            return [_consent(r) for r in rows]

    def problems(
        self, institution: str, asks: Sequence[tuple[str | None, str]], purpose: Purpose
    ) -> list[ConsentProblem | None]:
        """For each (consent id, applicant ref) a request carries, why it does not allow the
        query (None: it does). One read for a whole batch."""
        ids = sorted({c for c, _ in asks if c is not None})
        found: dict[str, Consent] = {}
        if ids:
            with Session(self.audit.engine) as s:
                key = tuple_(ConsentRow.institution, ConsentRow.consent_id)
                rows = s.scalars(select(ConsentRow).where(key.in_([(institution, c) for c in ids])))
                found = {r.consent_id: _consent(r) for r in rows}
        at = now()
        out: list[ConsentProblem | None] = []
        for consent_id, applicant in asks:
            consent = None if consent_id is None else found.get(consent_id)
            out.append(_problem(consent_id, consent, applicant, purpose, at))
        return out


def _problem(
    consent_id: str | None, consent: Consent | None, applicant: str, purpose: str, at: str
) -> ConsentProblem | None:
    if consent_id is None:
        return "missing"
    if consent is None:
        return "unknown"
    if consent.applicant_ref != applicant or consent.purpose != purpose:
        return "mismatch"
    state = consent.state(at)
    if state == "revoked":
        return "revoked"
    if state == "expired":
        return "expired"
    return None


def refuse_exposure(
    table: DecisionTable, k: int, problem: ConsentProblem, texts: ConsentTexts
) -> dict[str, Any]:
    """Applicant `k`'s exposure rule is not evaluated for want of consent: it is named among
    the unevaluated rules, a flag and (when the policy refers such applications and the
    applicant is not declined) the first reason say why. Returns what the audit record keeps."""
    lang = table.language
    rule = {"code": texts.rule, "action": "refer", "text": texts.rule_text.pick(lang),
            "points": 0}  # fmt: skip
    table.add_not_evaluated(k, rule)
    refer = texts.action == "refer" and table.decision[k] != "decline"
    flag = {"code": texts.code, "action": texts.action, "text": texts.why(problem, lang),
            "points": 0}  # fmt: skip
    if refer:
        table.decision[k] = "refer"
    table.add_flag(k, flag, first_reason=refer)
    return {"problem": problem, "rule": texts.rule}


def check_consents(audit: AuditLog) -> int:
    """The `consents` table against the chain's consent entries (for `audit verify`, after
    the chain itself verified): raise AuditError naming the first consent that differs.
    Returns how many consents the log holds."""
    expected: dict[tuple[str, str], dict[str, Any]] = {}
    with Session(audit.engine) as s:
        rows = s.scalars(select(AuditRow).where(AuditRow.kind == CONSENT).order_by(AuditRow.seq))
        for row in rows:
            change = json.loads(row.payload)
            key = (row.institution, row.decision_id)
            if change["action"] == "add":
                expected[key] = {k: change[k] for k in _KEPT} | {"revoked_at": None}
            elif key in expected:
                expected[key] = {**expected[key], "revoked_at": change["revoked_at"]}
            else:
                raise AuditError(f"row {row.seq}: a revoke of a consent the log does not have")
            expected[key]["last_seq"] = row.seq
        found: dict[tuple[str, str], dict[str, Any]] = {}
        if inspect(audit.engine).has_table(ConsentRow.__tablename__):
            found = {
                (c.institution, c.consent_id): {k: getattr(c, k) for k in (*_KEPT, "revoked_at",
                                                                          "last_seq")}
                for c in s.scalars(select(ConsentRow))
            }  # fmt: skip
    for institution, consent_id in sorted(set(found) | set(expected)):
        if found.get((institution, consent_id)) != expected.get((institution, consent_id)):
            raise AuditError(
                f"consent {consent_id} of {institution}: consents table differs from the log"
            )
    return len(expected)


_KEPT = ("applicant_ref", "purpose", "created_at", "expires_at")
