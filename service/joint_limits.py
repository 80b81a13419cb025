"""The joint-limit step of a decision use case (联合授信), shared by the horizontal service
(service/decisions.py) and the vertical one (service/vertical_service.py): for each applicant
whose request asks for a joint limit, the federation's exposure (the applicant's consent
checked first, the secure sums asked concurrently; service/exposure_http.py), then the limit
added to the decided table by service/joint.py's rule, with what the audit record keeps.

A decision that was not scored (a vertical model's feature party gave no routing) has no PD
to base a limit on: it gets none, and nobody is asked about the applicant's exposure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeAlias

from jointcredit.service.consent import ConsentRegistry, refuse_exposure
from jointcredit.service.decision import DecisionTable, Json
from jointcredit.service.errors import Invalid
from jointcredit.service.exposure_http import TOTALS_AT_ONCE, ExposureClient, ExposureResult
from jointcredit.service.joint import JointRequest, apply_joint, joint_limit
from jointcredit.service.limits import Gate
from jointcredit.service.policy import Policy
from jointcredit.service.policy_texts import ConsentProblem

NO_REGISTRY = ExposureResult(None, {"*": "no exposure registry configured"})
NOT_SCORED = "not asked: the application was not scored"

# Per applicant asking for a joint limit: the federation's exposure, or why consent did not
# allow asking for it.
Exposure: TypeAlias = ExposureResult | ConsentProblem | None


class JointLimits:
    def __init__(
        self, exposure: ExposureClient | None, consents: ConsentRegistry, policy: Policy
    ) -> None:
        self.exposure, self.consents, self.policy = exposure, consents, policy
        self._at_once = Gate(TOTALS_AT_ONCE)

    def check(self, requests: Sequence[JointRequest | None]) -> None:
        """A 422 for a participating lender outside the federation (before anyone is asked
        anything about the applicant)."""
        if self.exposure is None:
            return
        for r in requests:
            unknown = [] if r is None else self.exposure.outsiders(r.participating_lenders)
            if unknown:
                reason = f"not in the federation: {', '.join(unknown)}"
                raise Invalid("joint.participating_lenders", reason)

    async def exposures(
        self, requests: Sequence[JointRequest | None], institution: str
    ) -> list[Exposure]:
        """The federation's exposure for each applicant whose request asks for a joint limit
        (None: not asked), concurrently (one secure sum per distinct applicant, at most
        TOTALS_AT_ONCE at a time across the service); for
        those whose consent does not allow the query, why (service/consent.py). A lender
        outside the federation is a 422."""
        asking = [k for k, r in enumerate(requests) if r is not None]
        out: list[Exposure] = [None] * len(requests)
        if not asking:  # no task per applicant when nobody asks (a batch has up to 10,000)
            return out
        client = self.exposure
        if client is None:  # nothing leaves the service: no consent needed
            for k in asking:
                out[k] = NO_REGISTRY
            return out
        self.check(requests)
        asked = [(k, r) for k, r in enumerate(requests) if r is not None]
        asks = [(r.consent_id, r.applicant_id) for _, r in asked]
        problems = await asyncio.to_thread(self.consents.problems, institution, asks, "exposure")
        allowed = []
        for (k, r), problem in zip(asked, problems, strict=True):
            out[k] = problem
            if problem is None:
                allowed.append((k, r))

        async def total(applicant_id: str) -> ExposureResult:
            async with self._at_once():
                return await client.total(applicant_id)

        # One secure sum per applicant, however often a batch repeats it.
        distinct = list(dict.fromkeys(r.applicant_id for _, r in allowed))
        results = dict(zip(distinct, await asyncio.gather(*map(total, distinct)), strict=True))
        for k, r in allowed:
            out[k] = results[r.applicant_id]
        return out

    def answer(
        self, table: DecisionTable, k: int, request: JointRequest | None, exposure: Exposure
    ) -> tuple[Json | None, dict[str, Any]]:
        """Applicant `k`'s `joint_credit` (None: not asked for, or not scored) and what its
        audit record keeps of it; a missing exposure total or consent refers the applicant
        (service/joint.py, service/consent.py)."""
        if request is None:
            return None, {}
        record: dict[str, Any] = {"joint": request.model_dump(mode="json")}
        if table.probability_of_default[k] is None:
            rule = self.policy.consent
            table.add_not_evaluated(
                k, {"code": rule.rule, "action": "refer",
                    "text": rule.rule_text.pick(table.language), "points": 0}
            )  # fmt: skip
            return None, {**record, "exposure": NOT_SCORED}
        consent = None
        if isinstance(exposure, ExposureResult):
            limit = apply_joint(
                table, k, request, exposure.total_cents, exposure.unavailable, self.policy.joint
            )
        elif isinstance(exposure, str):  # no consent: nobody was asked
            consent = refuse_exposure(table, k, exposure, self.policy.consent)
            limit = joint_limit(
                request, table.probability_of_default[k], None,
                declined=table.decision[k] == "decline", policy=self.policy.joint,
                language=table.language,
            )  # fmt: skip
        else:
            raise ValueError("a joint limit asked for without its exposure")
        if table.status(k) == "under_review":  # limits only once a person approves
            limit = limit.model_copy(
                update={"available": 0.0, "allocations": dict.fromkeys(limit.allocations, 0.0)}
            )
        record["consent"] = consent or {"problem": None}
        return limit.model_dump(mode="json"), record
