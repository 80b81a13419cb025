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

Before all of this, an applicant outside what the model was trained on (a category the
federation's vocabulary lacks, a number beyond the span the preprocessing represents) is
referred, with an `[outside_training]` reason per such feature (service/coverage.py).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jointcredit.service.joint import JointPolicy

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
    action: Action
    when: dict[str, Condition] = Field(min_length=1)
    points: int = 0  # `adjust` only: added to the policy score
    below_score: int | None = None  # apply only when the (adjusted) score is below this

    @model_validator(mode="after")
    def _points(self) -> Rule:
        if (self.action == "adjust") != (self.points != 0):
            raise ValueError("`adjust` rules need non-zero points; other actions take none")
        return self


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
    so); `{value}` is the applicant's value, through `labels` when given. Each text must say
    why the value moves the risk the way it does, true of any value it may be given."""

    text: str
    approval_text: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    def render(self, value: object, *, toward_default: bool = True) -> str | None:
        """The text for `value` in that direction; None: the policy has none for it."""
        template = self.text if toward_default else self.approval_text
        if template is None:
            return None
        return template.replace("{value}", self.labels.get(str(value), show_value(value)))


class OutsideTraining(_Strict):
    """The reasons given when an applicant is referred for values outside what the model was
    trained on. `{feature}` is the feature's name, `{value}` the applicant's value, `{low}` and
    `{high}` the span a numeric feature's preprocessing represents."""

    code: str = Field(default="OUTSIDE_TRAINING_DATA", pattern=r"^[A-Z][A-Z0-9_]{1,63}$")
    unseen_text: str = (
        "The {feature} value {value} did not occur in the lenders' training data, so the model "
        "cannot score it reliably; a loan officer will review the application"
    )
    range_text: str = (
        "The {feature} value {value} is outside the range of values the model was built on "
        "({low} to {high}), so the model cannot score it reliably; a loan officer will review "
        "the application"
    )


def show_value(value: object) -> str:
    """A value as reasons show it."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:g}"
    return "missing" if value is None else str(value)


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

    @model_validator(mode="after")
    def _unique_codes(self) -> Policy:
        codes = [r.code for r in self.rules] + [self.outside_training.code]
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


class PolicyError(ValueError):
    pass


def load_policy(path: Path | None = None) -> Policy:
    source = path or DEFAULT_POLICY
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
        return Policy.model_validate(data)
    except FileNotFoundError as exc:
        raise PolicyError(f"{source}: policy file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PolicyError(f"{source}: invalid policy: {problems}") from exc
