"""The shipped policy's texts: every `feature_reasons` entry names a feature a shipped dataset
has (a text for a column that is not a feature, such as the SBA schema's time column, is never
shown and hides that the real feature has none)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from jointcredit.data.sba import SBA_SCHEMA
from jointcredit.data.synthetic import synthetic_schema
from jointcredit.service.languages import (
    EXPOSURE_UNAVAILABLE,
    GENERIC_REASON,
    LANGUAGES,
    MISSING,
    LanguageError,
    negotiate,
)
from jointcredit.service.policy import FeatureReason, Policy, PolicyError, load_policy


def test_every_feature_reason_names_a_shipped_feature() -> None:
    features = set(SBA_SCHEMA.features) | set(synthetic_schema().features)
    named = set(load_policy().feature_reasons)
    assert named, "the shipped policy has no feature texts"
    assert not named - features, sorted(named - features)
    assert SBA_SCHEMA.time not in named


# ----------------------------------------------------------------------------- languages

PLACEHOLDER = re.compile(r"\{[a-z]+\}")
CJK = re.compile(r"[\u4e00-\u9fff]")


def _pairs(policy: Policy) -> list[tuple[str, str, str | None]]:
    """(key, English, Chinese) of every text the policy shows a borrower."""
    out: list[tuple[str, str, str | None]] = []
    for r in policy.rules:
        out.append((f"rules.{r.code}", r.reason, r.reason_zh))
    for name, f in policy.feature_reasons.items():
        out.append((f"{name}.text", f.text, f.text_zh))
        out.append((f"{name}.approval_text", f.approval_text or "", f.approval_text_zh))
        out += [(f"{name}.labels.{k}", v, f.labels_zh.get(k)) for k, v in f.labels.items()]
    ot = policy.outside_training
    out.append(("outside_training.unseen_text", ot.unseen("en"), ot.unseen("zh")))
    out.append(("outside_training.range_text", ot.out_of_range("en"), ot.out_of_range("zh")))
    return out


def test_every_shipped_text_is_in_english_and_chinese() -> None:
    """Every text of the shipped policy and every sentence the service writes itself has a
    Chinese twin that is Chinese and takes the same placeholders."""
    policy = load_policy()
    assert policy.missing_chinese() == [] and policy.languages == ("en", "zh")
    built_in = [
        ("generic", GENERIC_REASON["en"][0], GENERIC_REASON["zh"][0]),
        ("generic approval", GENERIC_REASON["en"][1], GENERIC_REASON["zh"][1]),
        ("exposure", EXPOSURE_UNAVAILABLE["en"], EXPOSURE_UNAVAILABLE["zh"]),
        ("missing", MISSING["en"], MISSING["zh"]),
    ]
    for key, en, zh in [*_pairs(policy), *_pairs(Policy.model_validate(_bare())), *built_in]:
        assert en and zh, key
        assert CJK.search(zh) and not CJK.search(en), (key, zh)
        assert sorted(PLACEHOLDER.findall(en)) == sorted(PLACEHOLDER.findall(zh)), (key, en, zh)
    assert set(GENERIC_REASON) == set(EXPOSURE_UNAVAILABLE) == set(MISSING) == set(LANGUAGES)


def test_every_chinese_feature_text_says_which_way() -> None:
    for name, f in load_policy().feature_reasons.items():
        assert f.text_zh is not None and f.approval_text_zh is not None, name
        assert "高于" in f.text_zh and "低于" not in f.text_zh, name
        assert "低于" in f.approval_text_zh and "高于" not in f.approval_text_zh, name
    age = load_policy().feature_reasons["business_age"]
    assert (
        age.render("new", language="zh")
        == "您企业的经营年限（新设企业，成立不足2年）对应的风险高于平均水平"
    )
    assert age.render(None, toward_default=False, language="zh") == (
        "您企业的经营年限（缺失）对应的风险低于平均水平"
    )


def _bare() -> dict[str, Any]:
    return {"version": "t", "cutoffs": {"approve": 680, "decline": 600}}


def test_a_policy_without_chinese_for_some_text_answers_in_english_and_says_which() -> None:
    rule = {"code": "R1", "reason": "Too many lenders", "action": "decline",
            "when": {"x": {"ge": 4}}}  # fmt: skip
    both = Policy.model_validate({**_bare(), "rules": [{**rule, "reason_zh": "贷款机构过多"}]})
    assert both.languages == ("en", "zh") and both.answers_in("zh") == "zh"
    assert both.answers_in(None) == "en"
    partial = Policy.model_validate(
        {**_bare(), "rules": [{**rule, "reason_zh": "贷款机构过多"}, {**rule, "code": "R2"}],
         "outside_training": {"unseen_text": "New value {value} of {feature}"}}
    )  # fmt: skip
    assert partial.missing_chinese() == ["rules.R2.reason_zh", "outside_training.unseen_text_zh"]
    assert partial.languages == ("en",) and partial.answers_in("zh") == "en"
    # A built-in text the policy leaves out is in both languages; its own English one is not
    # silently paired with the built-in Chinese.
    assert partial.outside_training.out_of_range("zh") != partial.outside_training.range_text
    assert partial.outside_training.unseen("zh") == "New value {value} of {feature}"


def test_a_feature_text_refuses_chinese_labels_that_miss_a_value() -> None:
    with pytest.raises(ValidationError, match="labels_zh has no label for b"):
        FeatureReason(text="x", labels={"a": "A", "b": "B"}, labels_zh={"a": "甲"})


def test_a_policy_file_with_a_chinese_text_but_not_its_english_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        'version = "t"\n[cutoffs]\napprove = 680\ndecline = 600\n'
        '[feature_reasons.f]\ntext = "x"\napproval_text_zh = "乙"\n',
        encoding="utf-8",
    )
    with pytest.raises(
        PolicyError, match=r"feature_reasons\.f: .*approval_text_zh needs approval_text"
    ):
        load_policy(path)


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, None), ("", None), ("zh-CN", "zh"), ("zh-Hans-CN,zh;q=0.9", "zh"),
        ("en-US,en;q=0.9", "en"), ("fr;q=1, zh;q=0.5, en;q=0.8", "en"), ("de, *;q=0.1", "en"),
        ("en;q=0, zh", "zh"), ("ZH", "zh"),
    ],
)  # fmt: skip
def test_accept_language_picks_the_supported_language_of_highest_weight(
    header: str | None, language: str | None
) -> None:
    assert negotiate(header) == language


@pytest.mark.parametrize("header", ["fr", "fr-FR, de;q=0.5", "en;q=0", "zh;q=x"])
def test_accept_language_that_accepts_nothing_supported_is_an_error(header: str) -> None:
    with pytest.raises(LanguageError):
        negotiate(header)


def test_every_reason_code_the_service_can_give_has_both_texts_in_the_default_policy() -> None:
    """Each code `reason_codes` enumerates (tests/test_notices.py checks that decisions give
    no other) has an English and a Chinese text, with the same placeholders."""
    from jointcredit.service.reason_codes import reason_codes

    features = sorted(set(SBA_SCHEMA.features) | set(synthetic_schema().features))
    codes = reason_codes(load_policy(), features)
    assert {"MANY_RECENT_LENDERS", "OUTSIDE_TRAINING_DATA", "PROFILE_RISK",
            "EXPOSURE_UNAVAILABLE", "CONSENT_REQUIRED", "JOINT_EXPOSURE",
            "F_STATE"} <= set(codes)  # fmt: skip
    for code, texts in codes.items():
        assert texts, code
        for en, zh in texts:
            assert en and zh, (code, en, zh)
            assert CJK.search(zh) and not CJK.search(en), (code, zh)
            assert sorted(PLACEHOLDER.findall(en)) == sorted(PLACEHOLDER.findall(zh)), (code, en)
    # A policy whose text for one feature lacks its Chinese leaves that code without one.
    data = {**_bare(), "feature_reasons": {"state": {"text": "State {value}"}}}
    (toward_default, _) = reason_codes(Policy.model_validate(data), ["state"])["F_STATE"]
    assert toward_default == ("State {value}", "")


def test_the_notice_and_consent_texts_are_pairs_in_both_languages() -> None:
    policy = load_policy()
    n = policy.notice
    pairs = [n.scale, n.manual_review, n.correct_data, n.human_review, n.under_review,
             n.reviewed, n.decided, *n.outcomes.values()]  # fmt: skip
    pairs += [policy.consent.rule_text]
    texts = [(p.text, p.text_zh) for p in pairs] + [(b.text, b.text_zh) for b in policy.bands()]
    for en, zh in texts:
        assert CJK.search(zh) and not CJK.search(en), (en, zh)
        assert sorted(PLACEHOLDER.findall(en)) == sorted(PLACEHOLDER.findall(zh)), en
    assert [b.min_score for b in policy.bands()] == [680, 600, 350]
    bare = Policy.model_validate({**_bare(), "cutoffs": {"approve": 700, "decline": 350}})
    assert [b.min_score for b in bare.bands()] == [700, 350]
    with pytest.raises(ValidationError, match="the last at 350"):
        Policy.model_validate({**_bare(), "notice": {"bands": [
            {"min_score": 600, "text": "a", "text_zh": "甲"}]}})  # fmt: skip
