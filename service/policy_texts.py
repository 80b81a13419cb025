"""The policy's texts for adverse-action notices and for consent (sections `[notice]` and
`[consent]` of the policy TOML), each in English and Chinese.

Every text here is a pair, `text` and `text_zh`, both required when a policy gives one: a
policy cannot add a notice or consent text in one language only. A policy that leaves a text out
takes the built-in pair below. What a notice says and when: service/notices.py; consent:
service/consent.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jointcredit.service.languages import Language

# Why a request's consent does not allow a cross-party query (service/consent.py).
ConsentProblem = Literal["missing", "unknown", "expired", "revoked", "mismatch"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bilingual(_Strict):
    text: str = Field(min_length=1)
    text_zh: str = Field(min_length=1)

    def pick(self, language: Language) -> str:
        return self.text_zh if language == "zh" else self.text


def _pair(en: str, zh: str) -> Bilingual:
    return Bilingual(text=en, text_zh=zh)


class ScoreBand(_Strict):
    """Scores from `min_score` up to the next band's: what such a score means, in words."""

    min_score: int = Field(ge=350, le=950)
    text: str = Field(min_length=1)
    text_zh: str = Field(min_length=1)


def default_bands(approve: int, decline: int) -> list[ScoreBand]:
    """The bands a policy without `[[notice.bands]]` gets: its own cut-offs'."""
    bands = [
        ScoreBand(
            min_score=approve,
            text="This score is in the range the lender approves without a manual review",
            text_zh="该评分处于本机构无需人工审核即可批准的区间",
        ),
        ScoreBand(
            min_score=decline,
            text="This score is in the range where a loan officer reviews the application "
            "before the lender decides",
            text_zh="该评分处于需由信贷人员人工审核后再作决定的区间",
        ),
        ScoreBand(
            min_score=350,
            text="This score is below the range the lender approves: applicants with such "
            "scores default more often than the lender accepts",
            text_zh="该评分低于本机构可批准的区间：此类评分的申请人违约率高于本机构可接受的水平",
        ),
    ]
    kept: dict[int, ScoreBand] = {}
    for b in bands:  # cut-offs at 350, or equal ones, leave fewer bands
        kept.setdefault(b.min_score, b)
    return list(kept.values())


class NoticeTexts(_Strict):
    """`{score}`, `{decision_id}`, `{at}`, `{outcome}` are filled in where they appear."""

    bands: list[ScoreBand] | None = None  # None: the cut-offs' bands (`default_bands`)
    scale: Bilingual = _pair(
        "Your score is {score}. Scores run from 350 to 950; a higher score means a lower "
        "estimated risk of default.",
        "您的评分为{score}分。评分范围为350至950分，分数越高，估计的违约风险越低。",
    )
    manual_review: Bilingual = _pair(
        "You may ask for a loan officer to review this decision: contact the lender and quote "
        "decision {decision_id}. A person, not the automated system, will then decide.",
        "您可以要求由信贷人员人工复核本决定：请联系本机构并提供决定编号{decision_id}，"
        "届时将由人工而非自动化系统作出决定。",
    )
    correct_data: Bilingual = _pair(
        "If any information in your application is wrong or out of date, you may ask the "
        "lender to correct it and decide again; quote decision {decision_id}.",
        "如您申请中的任何信息有误或已过时，您可以要求本机构更正后重新作出决定；"
        "请提供决定编号{decision_id}。",
    )
    human_review: Bilingual = _pair(
        "You asked for a person to decide: this decision is not final until a loan officer "
        "has reviewed it.",
        "您已要求由人工作出决定：在信贷人员复核之前，本决定不是最终决定。",
    )
    under_review: Bilingual = _pair(
        "A loan officer is reviewing your application.",
        "信贷人员正在审核您的申请。",
    )
    reviewed: Bilingual = _pair(
        "A loan officer reviewed your application on {at}: {outcome}.",
        "信贷人员已于{at}审核您的申请：{outcome}。",
    )
    decided: Bilingual = _pair(
        "The decision was made on {at} and has not been reviewed by a loan officer.",
        "本决定作出于{at}，尚未经信贷人员审核。",
    )
    outcomes: dict[str, Bilingual] = {
        "approve": _pair("approved", "批准"),
        "decline": _pair("declined", "拒绝"),
        "refer": _pair("referred to a loan officer", "转交信贷人员审核"),
    }

    @model_validator(mode="after")
    def _bands_ordered(self) -> NoticeTexts:
        if self.bands is not None:
            mins = [b.min_score for b in self.bands]
            if not mins or mins != sorted(set(mins), reverse=True) or mins[-1] != 350:
                raise ValueError(
                    "bands: give them from the highest min_score down, distinct, the last at 350"
                )
        keys = {"approve", "decline", "refer"}
        if set(self.outcomes) != keys:
            raise ValueError(f"outcomes: give exactly {', '.join(sorted(keys))}")
        return self


class ConsentTexts(_Strict):
    """Cross-party use of an applicant's data (the federation's exposure query) needs a consent
    the institution registered (`jointcredit consent add`); without one the exposure rule
    (`rule`) is not evaluated and the decision gives a reason (`code`) saying why. `action`:
    refer such an application to a loan officer (`refer`), or let the rest of the decision
    stand (`none`; the joint limit then has nothing available)."""

    rule: str = Field(default="JOINT_EXPOSURE", pattern=r"^[A-Z][A-Z0-9_]{1,63}$")
    code: str = Field(default="CONSENT_REQUIRED", pattern=r"^[A-Z][A-Z0-9_]{1,63}$")
    action: Literal["refer", "none"] = "refer"
    rule_text: Bilingual = _pair(
        "The lenders' existing exposure to the applicant (a query to the other lenders)",
        "各参与机构对申请人的现有授信余额（需向其他机构查询）",
    )
    missing: Bilingual = _pair(
        "The other lenders were not asked about your existing borrowing because the request "
        "carried no consent to share your data with them",
        "由于申请未附带您同意与其他机构共享数据的授权，我们未向其他机构查询您的现有借款",
    )
    unknown: Bilingual = _pair(
        "The other lenders were not asked about your existing borrowing because the consent "
        "given is not on the lender's record",
        "由于所提供的授权不在本机构的授权记录中，我们未向其他机构查询您的现有借款",
    )
    expired: Bilingual = _pair(
        "The other lenders were not asked about your existing borrowing because your consent "
        "to share your data with them has expired",
        "由于您同意与其他机构共享数据的授权已过期，我们未向其他机构查询您的现有借款",
    )
    revoked: Bilingual = _pair(
        "The other lenders were not asked about your existing borrowing because you withdrew "
        "your consent to share your data with them",
        "由于您已撤回同意与其他机构共享数据的授权，我们未向其他机构查询您的现有借款",
    )
    mismatch: Bilingual = _pair(
        "The other lenders were not asked about your existing borrowing because the consent "
        "given was not for this applicant or not for this use",
        "由于所提供的授权并非针对本申请人或本用途，我们未向其他机构查询您的现有借款",
    )

    def why(self, problem: ConsentProblem, language: Language) -> str:
        text: Bilingual = getattr(self, problem)
        return text.pick(language)
