"""Every reason code the service can give, with the texts it may give under it in English and
Chinese: the policy's rules, its referral outside the training data, the profile's own risk,
one code per model feature, the joint limit's exposure referral, and the consent reason and
the exposure rule it leaves unevaluated. Tests check that each has both texts; the notice
route tells reasons again by these codes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

from jointcredit.service.languages import (
    EXPOSURE_CODE,
    EXPOSURE_UNAVAILABLE,
    GENERIC_REASON,
    Language,
)
from jointcredit.service.policy import Policy
from jointcredit.service.policy_texts import ConsentProblem
from jointcredit.service.reasons import feature_code

Texts = list[tuple[str, str]]  # (English, Chinese) per text a code may carry


def reason_codes(policy: Policy, features: Sequence[str]) -> dict[str, Texts]:
    """Code -> its (English, Chinese) texts (templates, before values are filled in), for a
    model with these features."""
    out: dict[str, Texts] = {r.code: [(r.text("en"), r.text("zh"))] for r in policy.rules}
    ot = policy.outside_training
    out[ot.code] = [
        (ot.unseen("en"), ot.unseen("zh")),
        (ot.out_of_range("en"), ot.out_of_range("zh")),
    ]
    pr = policy.profile_risk
    out[pr.code] = [(pr.pick(f, "en"), pr.pick(f, "zh")) for f in (False, True)]
    for name in features:
        out[feature_code(name)] = _feature_texts(policy, name)
    out[EXPOSURE_CODE] = [(EXPOSURE_UNAVAILABLE["en"], EXPOSURE_UNAVAILABLE["zh"])]
    consent = policy.consent
    out[consent.code] = [(consent.why(p, "en"), consent.why(p, "zh"))
                         for p in get_args(ConsentProblem)]  # fmt: skip
    out[consent.rule] = [(consent.rule_text.text, consent.rule_text.text_zh)]
    return out


def _feature_texts(policy: Policy, name: str) -> Texts:
    """A model reason's texts, toward default and toward approval (the generic sentence where
    the policy has none)."""
    f = policy.feature_reasons.get(name)
    out: Texts = []
    for toward_default, k in ((True, 0), (False, 1)):
        template: dict[Language, str | None] = {
            "en": None if f is None else (f.text if toward_default else f.approval_text),
            "zh": None if f is None else (f.text_zh if toward_default else f.approval_text_zh),
        }
        en = template["en"] or GENERIC_REASON["en"][k]
        zh = template["zh"] if template["en"] else GENERIC_REASON["zh"][k]
        out.append((en, zh or ""))
    return out
