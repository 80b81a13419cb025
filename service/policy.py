"""Credit policy: score cut-offs, a manual-review band, a stance, and rules with reason codes.

A policy is a TOML file validated by pydantic (`service/default_policy.toml` is the shipped,
documented default). How a decision is made from it:

1. `adjust` rules that match move the policy score (e.g. a region adjustment); the score the
   applicant sees is the model's, the adjusted one is what the cut-offs compare.
2. The stance shifts the cut-offs (`conservative` raises them by `stances.conservative.shift`).
3. Any matching `decline` rule declines; otherwise any matching `refer` rule refers to manual
   review; otherwise the cut-offs decide: at or above `approve` approves, below `decline`
   declines, in between refers.

A rule matches when every condition in `when` holds. Conditions name a model feature or a
declared `[context]` field (signals the model does not use, e.g. how many lenders the applicant
borrowed from recently). A rule whose field the request does not carry does not match, and the
response says which rules could not be evaluated. A rule naming a field that is neither refuses
the policy, unless `absent_fields = "not_evaluated"` (the shipped default, so that it serves any
model): such a rule is then never evaluated and every decision lists it so.

Languages (service/languages.py): every text a borrower sees has an English key (`reason`,
`text`, `approval_text`, `labels`, `unseen_text`, `range_text`) and a Chinese twin beside it,
the same key with `_zh` (`reason_zh`, `text_zh`, `approval_text_zh`, `labels_zh`,
`unseen_text_zh`, `range_text_zh`); the notice and consent texts (`[notice]`, `[consent]`,
service/policy_texts.py) come in pairs only. A policy file lacking Chinese for any text of its
own is refused at load (`load_policy`, naming each key; `serve` exits 2): a borrower is never
shown a letter half in one language and half in another. A policy built in code may still
lack some (`missing_chinese`); it then answers every request in English, the response's
`language` saying so. Texts the policy leaves out take the built-in ones, which exist in both.

Before all of this, an applicant outside what the model was trained on (a category the
federation's vocabulary lacks, a number beyond the span the preprocessing represents) is
referred, with an `[outside_training]` reason per such feature (service/coverage.py).
"""

from __future__ import annotations

import html
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jointcredit.service.joint import JointPolicy
from jointcredit.service.languages import (
    DEFAULT,
    EXPOSURE_CODE,
    LANGUAGES,
    MISSING,
    OTHER_LEVEL,
    PROFILE_REASON,
    PROFILE_REASON_CODE,
    Language,
)
from jointcredit.service.policy_texts import ConsentTexts, NoticeTexts, ScoreBand, default_bands

DEFAULT_POLICY = Path(__file__).with_name("default_policy.toml")

Action = Literal["decline", "refer", "adjust"]
Stance = Literal["normal", "conservative"]
Value = float | int | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    """One test on one field; every operator given must hold (evaluated by service/rules.py:
    numbers compare as numbers, anything else as its text)."""

    eq: Value | None = None
    ne: Value | None = None
    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None
    in_: list[Value] | None = Field(None, alias="in")
    not_in: list[Value] | None = None

    @model_validator(mode="after")
    def _something(self) -> Condition:
        if all(v is None for v in self.model_dump().values()):
            raise ValueError("a condition needs at least one of eq, ne, lt, le, gt, ge, in, not_in")
        return self


class Rule(_Strict):
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")
    reason: str = Field(min_length=1)  # plain language, shown to the applicant
    reason_zh: str | None = Field(None, min_length=1)  # the same in Chinese
    action: Action
    when: dict[str, Condition] = Field(min_length=1)
    points: int = 0  # `adjust` only: added to the policy score
    below_score: int | None = None  # apply only when the (adjusted) score is below this

    @model_validator(mode="after")
    def _points(self) -> Rule:
        if (self.action == "adjust") != (self.points != 0):
            raise ValueError("`adjust` rules need non-zero points; other actions take none")
        return self

    def text(self, language: Language) -> str:
        return self.reason_zh if language == "zh" and self.reason_zh else self.reason


class ContextField(_Strict):
    """A non-model input a rule may use; requests may send it in `context`."""

    type: Literal["integer", "number", "string"]
    description: str
    min: float | None = None
    max: float | None = None


class Cutoffs(_Strict):
    approve: int = Field(ge=350, le=950)
    decline: int = Field(ge=350, le=950)

    @model_validator(mode="after")
    def _band(self) -> Cutoffs:
        if self.decline > self.approve:
            raise ValueError("the decline cut-off must not be above the approve cut-off")
        return self


class StanceSetting(_Strict):
    shift: int = Field(ge=-200, le=200)


class FeatureReason(_Strict):
    """Plain-language text for a model feature: `text` when it pushed the applicant toward
    default, `approval_text` when toward approval (without one, a generic sentence that says
    so); `{value}` is the applicant's value, through `labels` when given, else HTML-escaped,
    and "other" for a category the model never saw (`reason_value`). Each text must say why
    the value moves the risk the way it does, true of any value it may be given."""

    text: str
    approval_text: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    text_zh: str | None = None
    approval_text_zh: str | None = None
    labels_zh: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _twins(self) -> FeatureReason:
        if self.approval_text_zh is not None and self.approval_text is None:
            raise ValueError("approval_text_zh needs approval_text")
        unlabelled = sorted(set(self.labels) - set(self.labels_zh))
        if self.labels_zh and unlabelled:
            raise ValueError(f"labels_zh has no label for {', '.join(unlabelled)}")
        return self

    def render(
        self, value: object, *, toward_default: bool = True, language: Language = DEFAULT
    ) -> str | None:
        """The text for `value` in that direction; None: the policy has none for it."""
        zh = language == "zh" and self.text_zh is not None
        if toward_default:
            template = self.text_zh if zh else self.text
        else:
            template = self.approval_text_zh if zh else self.approval_text
        if template is None:
            return None
        labels = self.labels_zh if zh else self.labels
        label = labels.get(str(value)) if value is not UNSEEN else None
        return template.replace("{value}", label or reason_value(value, language))


class OutsideTraining(_Strict):
    """The reasons given when an applicant is referred for values outside what the model was
    trained on. `{feature}` is the feature's name, `{value}` the applicant's number (out of
    range) or the level the model reads an unseen category as ("other": never the applicant's
    own text), `{low}` and `{high}` the span a numeric feature's preprocessing represents."""

    code: str = Field(default="OUTSIDE_TRAINING_DATA", pattern=r"^[A-Z][A-Z0-9_]{1,63}$")
    unseen_text: str = (
        "The {feature} value given did not occur in the lenders' training data (the model "
        'reads it as "{value}"), so it cannot be scored reliably; a loan officer will review the '
        "application"
    )
    range_text: str = (
        "The {feature} value {value} is outside the range of values the model was built on "
        "({low} to {high}), so the model cannot score it reliably; a loan officer will review "
        "the application"
    )
    # Chinese: when left out, the built-in translation of a built-in English text; none for
    # an English text of the policy's own.
    unseen_text_zh: str | None = None
    range_text_zh: str | None = None

    def unseen(self, language: Language) -> str:
        return self._pick("unseen_text", language)

    def out_of_range(self, language: Language) -> str:
        return self._pick("range_text", language)

    def _pick(self, key: str, language: Language) -> str:
        english: str = getattr(self, key)
        chinese: str | None = getattr(self, f"{key}_zh")
        if language == "zh" and chinese is None and english == _BUILT_IN[key]:
            chinese = _BUILT_IN_ZH[key]
        return chinese if language == "zh" and chinese is not None else english


_BUILT_IN = {k: OutsideTraining.model_fields[k].default for k in ("unseen_text", "range_text")}
_BUILT_IN_ZH = {
    "unseen_text": "您填写的{feature}未出现在各参与机构的训练数据中（模型将其视为“{value}”），"
    "无法可靠评分，您的申请将由信贷人员人工审核",
    "range_text": "您填写的{feature}（{value}）超出了模型训练数据的范围（{low}至{high}），模型无法"
    "可靠评分，您的申请将由信贷人员人工审核",
}


class ProfileRisk(_Strict):
    """The first reason of a decline or model-driven referral where no detail of the
    application pushed toward default: the profile as a whole is above what the lender accepts.
    `text` stands alone; `followed_text` is followed by the details that lowered the risk least.
    Chinese: when left out, the built-in translation of a built-in English text."""

    code: str = Field(default=PROFILE_REASON_CODE, pattern=r"^[A-Z][A-Z0-9_]{1,63}$")
    text: str = Field(default=PROFILE_REASON["en"][0], min_length=1)
    followed_text: str = Field(default=PROFILE_REASON["en"][1], min_length=1)
    text_zh: str | None = None
    followed_text_zh: str | None = None

    def pick(self, followed: bool, language: Language) -> str:
        key = "followed_text" if followed else "text"
        english: str = getattr(self, key)
        chinese: str | None = getattr(self, f"{key}_zh")
        if language == "zh" and chinese is None and english == PROFILE_REASON["en"][int(followed)]:
            chinese = PROFILE_REASON["zh"][int(followed)]
        return chinese if language == "zh" and chinese is not None else english


def show_value(value: object, language: Language = DEFAULT) -> str:
    """A value as reasons show it."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:g}"
    return MISSING[language] if value is None else str(value)


class _Unseen:
    """A category outside the model's levels, as reasons name it (`reason_value`)."""

    def __repr__(self) -> str:
        return "UNSEEN"


UNSEEN = _Unseen()


def reason_value(value: object, language: Language = DEFAULT) -> str:
    """A value inside a reason's text: the model's level for an unseen category (`UNSEEN`),
    else `show_value`'s, HTML-escaped (texts reach web pages and letters)."""
    if value is UNSEEN:
        return OTHER_LEVEL[language]
    return html.escape(show_value(value, language))


class Policy(_Strict):
    version: str = Field(min_length=1)
    stance: Stance = "normal"
    cutoffs: Cutoffs
    stances: dict[Stance, StanceSetting] = Field(default_factory=dict)
    context: dict[str, ContextField] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    feature_reasons: dict[str, FeatureReason] = Field(default_factory=dict)
    max_reasons: int = Field(4, ge=1, le=10)  # reasons per decision, of every kind
    joint: JointPolicy = JointPolicy()
    # A rule field that is neither a model feature nor a declared context field: refuse the
    # policy ("error"), or never evaluate that rule and say so in every decision.
    absent_fields: Literal["error", "not_evaluated"] = "error"
    outside_training: OutsideTraining = OutsideTraining()
    profile_risk: ProfileRisk = ProfileRisk()
    notice: NoticeTexts = NoticeTexts()
    consent: ConsentTexts = ConsentTexts()

    def bands(self) -> list[ScoreBand]:
        """What scores mean, by band from the highest down (`[[notice.bands]]`, else the
        cut-offs')."""
        given = self.notice.bands
        return given if given is not None else default_bands(self.cutoffs.approve,
                                                             self.cutoffs.decline)  # fmt: skip

    def missing_chinese(self) -> list[str]:
        """The policy's own texts (not the built-in ones) without a Chinese twin, by key."""
        return _english_only(self)

    @property
    def languages(self) -> tuple[Language, ...]:
        """The languages this policy answers in."""
        return ("en",) if _english_only(self) else LANGUAGES

    def answers_in(self, asked: Language | None) -> Language:
        """The language a request that asks for `asked` is answered in."""
        return asked if asked is not None and asked in self.languages else DEFAULT

    @model_validator(mode="after")
    def _unique_codes(self) -> Policy:
        codes = [r.code for r in self.rules] + [self.outside_training.code]
        codes += [self.consent.rule, self.consent.code, self.profile_risk.code, EXPOSURE_CODE]
        dupes = sorted({c for c in codes if codes.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate rule codes: {', '.join(dupes)}")
        return self

    def cutoffs_for(self, stance: Stance | None = None) -> Cutoffs:
        """The cut-offs under a stance: shifted, and kept on the 350-950 scale (a negative
        shift below 350 would otherwise make the policy unusable)."""
        shift = self.stances.get(stance or self.stance, StanceSetting(shift=0)).shift
        return Cutoffs(
            approve=max(350, min(950, self.cutoffs.approve + shift)),
            decline=max(350, min(950, self.cutoffs.decline + shift)),
        )

    def check_fields(self, features: set[str]) -> dict[str, list[str]]:
        """Every rule field must be a model feature or a declared context field; under
        `absent_fields = "not_evaluated"`, the rules whose fields are not, with those fields
        (rule code -> fields)."""
        known = features | set(self.context)
        absent: dict[str, list[str]] = {}
        for rule in self.rules:
            unknown = sorted(set(rule.when) - known)
            if unknown and self.absent_fields == "error":
                raise ValueError(
                    f"rule {rule.code}: {', '.join(unknown)} is neither a model feature nor a "
                    "declared [context] field"
                )
            if unknown:
                absent[rule.code] = unknown
        clash = sorted(features & set(self.context))
        if clash:
            raise ValueError(f"[context] fields shadow model features: {', '.join(clash)}")
        return absent


def _english_only(policy: Policy) -> list[str]:
    """`Policy.missing_chinese`."""
    pairs: list[tuple[str, bool]] = []
    for r in policy.rules:
        pairs.append((f"rules.{r.code}.reason_zh", r.reason_zh is not None))
    for name, f in policy.feature_reasons.items():
        key = f"feature_reasons.{name}"
        pairs.append((f"{key}.text_zh", f.text_zh is not None))
        if f.approval_text is not None:
            pairs.append((f"{key}.approval_text_zh", f.approval_text_zh is not None))
        if f.labels:
            pairs.append((f"{key}.labels_zh", bool(f.labels_zh)))
    ot = policy.outside_training
    for k in ("unseen_text", "range_text"):
        given = getattr(ot, f"{k}_zh") is not None
        if given or getattr(ot, k) != _BUILT_IN[k]:
            pairs.append((f"outside_training.{k}_zh", given))
    pr = policy.profile_risk
    for followed, k in enumerate(("text", "followed_text")):
        given = getattr(pr, f"{k}_zh") is not None
        if given or getattr(pr, k) != PROFILE_REASON["en"][followed]:
            pairs.append((f"profile_risk.{k}_zh", given))
    return [k for k, has in pairs if not has]


class PolicyError(ValueError):
    pass


def load_policy(path: Path | None = None) -> Policy:
    source = path or DEFAULT_POLICY
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
        policy = Policy.model_validate(data)
    except FileNotFoundError as exc:
        raise PolicyError(f"{source}: policy file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PolicyError(f"{source}: invalid policy: {problems}") from exc
    untranslated = policy.missing_chinese()
    if untranslated:
        raise PolicyError(
            f"{source}: texts without their Chinese (zh-CN) twin: {', '.join(untranslated)}"
        )
    return policy
