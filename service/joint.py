"""The joint credit limit (联合授信): how much the participating lenders may extend together,
and how it is shared among them.

The rule (documented in docs/SERVICE.md, parameters in the policy's `[joint]` section):

1. Affordability. The applicant may spend at most `max_debt_service_ratio` of monthly income on
   debt service; what remains after existing monthly payments, as the present value of
   `term_months` payments at `annual_rate`, is the capacity.
2. Risk. The capacity shrinks linearly with the probability of default and reaches zero at
   `pd_ceiling`: limit = capacity x max(0, 1 - PD / pd_ceiling).
3. Existing exposure across the federation (a secure sum: no lender reveals its figure) is
   subtracted; what remains is available.
4. Allocation. Each participating lender gets an equal share, capped at `max_share` of the
   available amount when there are enough lenders to honour the cap, rounded down to
   `rounding` dollars; a declined application gets nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from jointcredit.service.decision import DecisionTable
from jointcredit.service.fields import Institution, text
from jointcredit.service.languages import EXPOSURE_CODE, EXPOSURE_UNAVAILABLE, Language


class JointPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_debt_service_ratio: float = Field(default=0.40, gt=0, le=1)
    term_months: int = Field(default=60, ge=1, le=480)
    annual_rate: float = Field(default=0.09, ge=0, le=1)
    pd_ceiling: float = Field(default=0.30, gt=0, le=1)
    max_share: float = Field(default=0.6, gt=0, le=1)
    rounding: int = Field(default=100, ge=1)


class JointRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "applicant_id": "TIN-12-3456789",
                    "annual_income": 420000,
                    "monthly_debt_payments": 6500,
                    "participating_lenders": ["bank-a", "bank-b"],
                    "consent_id": "consent-2026-0001",
                }
            ]
        },
    )
    applicant_id: text(128, min_length=1) = Field(  # type: ignore[valid-type]
        description="never leaves the service"
    )
    annual_income: float = Field(gt=0, le=1e12, allow_inf_nan=False, strict=True)
    monthly_debt_payments: float = Field(ge=0, le=1e11, allow_inf_nan=False, strict=True)
    participating_lenders: list[Institution] = Field(
        min_length=1, max_length=50, description="institution ids"
    )
    consent_id: text(64, min_length=1) | None = Field(  # type: ignore[valid-type]
        None,
        description="the applicant's consent to query the other lenders, as registered with "
        "`jointcredit consent add` for this applicant_id and purpose `exposure`; without a "
        "valid one the exposure rule is not evaluated (`rules_not_evaluated`) and a reason "
        "says why",
    )


class JointOut(BaseModel):
    capacity: float = Field(description="affordable total before risk and exposure")
    total_limit: float = Field(description="after the risk adjustment")
    existing_exposure: float | None = Field(description="secure sum over the federation")
    available: float
    allocations: dict[str, float]
    rule: str


def present_value(payment: float, annual_rate: float, months: int) -> float:
    if payment <= 0:
        return 0.0
    r = annual_rate / 12
    if r == 0:
        return payment * months
    return payment * (1 - (1 + r) ** -months) / r


def capacity(request: JointRequest, policy: JointPolicy) -> float:
    monthly = request.annual_income / 12 * policy.max_debt_service_ratio
    return present_value(
        monthly - request.monthly_debt_payments, policy.annual_rate, policy.term_months
    )


def allocate(available: float, lenders: list[str], policy: JointPolicy) -> dict[str, float]:
    if available <= 0:
        return dict.fromkeys(lenders, 0.0)
    share = available / len(lenders)
    if len(lenders) * policy.max_share >= 1:  # the cap can be honoured
        share = min(share, available * policy.max_share)
    each = math.floor(share / policy.rounding) * policy.rounding
    return dict.fromkeys(lenders, float(each))


def joint_limit(
    request: JointRequest,
    pd: float,
    exposure_cents: int | None,
    declined: bool,
    policy: JointPolicy,
    language: Language = "en",
) -> JointOut:
    cap = capacity(request, policy)
    limit = cap * max(0.0, 1.0 - pd / policy.pd_ceiling)
    exposure = None if exposure_cents is None else exposure_cents / 100
    available = 0.0 if declined or exposure is None else max(0.0, limit - exposure)
    lenders = list(dict.fromkeys(request.participating_lenders))
    return JointOut(
        capacity=round(cap, 2),
        total_limit=round(limit, 2),
        existing_exposure=exposure,
        available=round(available, 2),
        allocations=allocate(available, lenders, policy),
        rule=_rule(policy, language),
    )


def _rule(policy: JointPolicy, language: Language) -> str:
    """The rule in words, for the applicant and the lenders."""
    ratio, rate = f"{policy.max_debt_service_ratio:.0%}", f"{policy.annual_rate:.1%}"
    ceiling, share, months = (
        f"{policy.pd_ceiling:.0%}",
        f"{policy.max_share:.0%}",
        policy.term_months,
    )
    if language == "zh":
        return (
            f"偿债能力 = （月收入的{ratio} - 现有月还款额）按年利率{rate}、{months}个月计算的现值；"
            f"额度 = 偿债能力 x (1 - 违约概率 / {ceiling})；"
            "可用额度 = 额度 - 各参与机构的现有授信余额合计；"
            f"各参与机构平均分配，每家不超过{share}"
        )
    return (
        f"capacity = PV of ({ratio} of monthly income - existing payments) over {months} months "
        f"at {rate}; limit = capacity x (1 - PD / {ceiling}); available = limit - existing "
        f"exposure across the federation; equal shares, at most {share} each"
    )


def apply_joint(
    table: DecisionTable,
    k: int,
    request: JointRequest,
    total_cents: int | None,
    unavailable: Mapping[str, str],
    policy: JointPolicy,
) -> JointOut:
    """Applicant `k`'s joint limit, given the federation's exposure total (None: some
    institution did not answer, `unavailable` says who and why). Without a trustworthy total
    there is no automatic limit: the application is referred with the reason (a declined one
    stays declined); a referred application gets a limit only once approved."""
    if total_cents is None:
        who = "; ".join(f"{i}: {why}" for i, why in sorted(unavailable.items()))
        flag = {"code": EXPOSURE_CODE, "action": "refer",
                "text": f"{EXPOSURE_UNAVAILABLE[table.language]} ({who})",
                "points": 0}  # fmt: skip
        declined = table.decision[k] == "decline"
        if not declined:
            table.decision[k] = "refer"
        table.add_flag(k, flag, first_reason=not declined)
    joint = joint_limit(
        request,
        table.probability_of_default[k],
        total_cents,
        declined=table.decision[k] == "decline",
        policy=policy,
        language=table.language,
    )
    if table.decision[k] == "refer":
        joint = joint.model_copy(
            update={"available": 0.0, "allocations": dict.fromkeys(joint.allocations, 0.0)}
        )
    return joint
