"""The languages borrowers read their reasons in, and which one a request asks for.

Every text a borrower sees exists in English and Chinese: the policy's own texts (its rules'
reasons, its feature texts, its referral texts outside the training data; service/policy.py)
and the few sentences the service writes itself (below: the generic model reasons for
features the policy has no text for, the profile's own risk, the joint limit's referral).
Reason codes, features and directions do not depend on the language, so a decision audited in
one language can be told again in the other.

A request names its language in its body (`language`) or, failing that, in the
`Accept-Language` header (RFC 9110: the supported tag with the highest weight; `en-US` is
English, `zh-CN` and `zh-Hans` Chinese, `*` the default); neither: English. A body naming
another language is a 422 like any other invalid field; so is a header that accepts none of
the supported languages, rather than an answer in a language the caller did not accept.
"""

from __future__ import annotations

from typing import Literal, get_args

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = get_args(Language)
DEFAULT: Language = "en"

# A model reason for a feature the policy has no text for: `{feature}`, `{value}`.
GENERIC_REASON: dict[Language, tuple[str, str]] = {  # (toward default, toward approval)
    "en": (
        "{feature} = {value} raised the estimated risk",
        "{feature} = {value} lowered the estimated risk",
    ),
    "zh": (
        "{feature} = {value}，使估计的违约风险上升",
        "{feature} = {value}，使估计的违约风险下降",
    ),
}

# A decline or a model-driven referral where no detail of the application pushed toward
# default (the risk of its profile as a whole is above what the lender accepts): the first of
# its reasons (alone, or followed by the details that lowered the risk least).
PROFILE_REASON_CODE = "PROFILE_RISK"
PROFILE_REASON: dict[Language, tuple[str, str]] = {  # (alone, followed by details)
    "en": (
        "Applicants with this profile default more often than the lender accepts; no single "
        "detail of the application raised the estimated risk",
        "Applicants with this profile default more often than the lender accepts; no single "
        "detail of the application raised the estimated risk, and the details listed next "
        "lowered it least",
    ),
    "zh": (
        "具有此类特征的申请人违约率高于本机构可接受的水平；申请中没有任何单项资料使估计的违约风险上升",
        "具有此类特征的申请人违约率高于本机构可接受的水平；申请中没有任何单项资料使估计的违约风险上升，"
        "以下各项资料使风险下降得最少",
    ),
}

# How a missing value reads inside a reason.
MISSING: dict[Language, str] = {"en": "missing", "zh": "缺失"}

# How a category the model never saw reads inside a reason: the level the model scored it as
# (its bucket for every rare or unknown value), never the applicant's own text.
OTHER_LEVEL: dict[Language, str] = {"en": "other", "zh": "其他"}

# The joint limit's referral when the federation's exposure total could not be established.
EXPOSURE_CODE = "EXPOSURE_UNAVAILABLE"
# Its text: when the federation's exposure total could not be established.
EXPOSURE_UNAVAILABLE: dict[Language, str] = {
    "en": "The lenders' existing exposure to the applicant could not be established, so the "
    "joint limit needs a loan officer's review",
    "zh": "目前无法确认各参与机构对您的现有授信余额，因此联合授信额度需由信贷人员人工审核",
}


class LanguageError(ValueError):
    """An `Accept-Language` header that accepts none of the supported languages."""


def negotiate(header: str | None) -> Language | None:
    """The language an `Accept-Language` header prefers among the supported ones (None: no
    header, or only an empty one)."""
    if header is None or not header.strip():
        return None
    ranked: list[tuple[float, int, Language]] = []
    for k, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    raise LanguageError(
                        f"a weight that is not a number: {item.strip()!r}"
                    ) from None
        primary = tag.strip().lower().split("-")[0]
        found: Language | None = DEFAULT if primary == "*" else _supported(primary)
        if found is not None and weight > 0:
            ranked.append((-weight, k, found))
    if not ranked:
        raise LanguageError(
            f"none of {header.strip()!r} is supported; supported: {', '.join(LANGUAGES)}"
        )
    return min(ranked)[2]


def _supported(primary: str) -> Language | None:
    for language in LANGUAGES:
        if primary == language:
            return language
    return None
