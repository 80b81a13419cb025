"""Request and response bodies. The applicant schema is generated from the model's own feature
schema, so the service accepts exactly what the model was trained on.

Every feature is required (a missing key is a 422, never a silent zero or default); `null` is
accepted only where the data schema says `missing = "impute"`, because that is what the model
was trained to handle. Numbers must be finite and inside the schema's `min`/`max`, or one of the
feature's special codes (the schema's `special`, e.g. 96 = "no bureau file": codes that lie
outside the range by design and that the model learned as codes); categories are strings
(integers are accepted and read as their decimal text, e.g. a year). Unknown fields are
rejected.

Validation is strict, integers are bounded, texts are bounded and printable (service/fields.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from jointcredit.data.schema import FeatureSpec, Schema
from jointcredit.service.fields import NOTE, SAFE_INT, TEXT_ERROR, integer, integer_branches, text
from jointcredit.service.joint import JointOut, JointRequest
from jointcredit.service.languages import Language
from jointcredit.service.policy import Policy

MAX_BATCH = 10_000
HUMAN_REVIEW_TEXT = (
    "the applicant asks for a person to decide (PIPL Art. 24): scored as usual, but never "
    "final by automated means; the decision goes to the review queue (status `under_review`)"
)
HUMAN_REVIEW: Any = (bool, Field(False, strict=True, description=HUMAN_REVIEW_TEXT))
# The request models are generated per model and policy (below); their OpenAPI names.
SINGLE, BATCH, COLUMNAR = "DecisionRequest", "BatchDecisionRequest", "ColumnarDecisionRequest"


# A category is a string, or an integer read as its decimal text (e.g. a year); never a
# boolean or a fraction. Strict core types, Python only for an integer written as `60.0`: a
# Python callback per categorical field made validation several times slower per applicant.
# `category_text` turns the integers into text after validation; `collapse_errors` turns the
# union's two messages into one.
_CATEGORY_TEXT = text(128, min_length=1)
_WHOLE, _WRITTEN = integer_branches()
Category: Any = Annotated[
    _CATEGORY_TEXT | _WHOLE | _WRITTEN,
    Field(union_mode="left_to_right"),
    WithJsonSchema(
        {"anyOf": [TypeAdapter(_CATEGORY_TEXT).json_schema(), TypeAdapter(integer()).json_schema()]}
    ),
]
CATEGORY_ERROR = (
    f"a category must be a string (or an integer code such as a year, at most {SAFE_INT} in "
    "magnitude)"
)
# pydantic-core's names of a union's branches, which end an error's location.
_UNION_TAGS = ("str", "int", "float", "constrained-", "function-")
# The errors whose own message names the problem better than CATEGORY_ERROR.
_OWN_MESSAGE = ("string_too_short", "string_too_long")


def category_text(value: object) -> object:
    return str(value) if type(value) is int else value  # validated: never a bool here


def collapse_errors(errors: Sequence[Mapping[str, Any]]) -> list[tuple[tuple[Any, ...], str]]:
    """(location, message) per problem; a category's two union branches become one."""
    out: list[tuple[tuple[Any, ...], str]] = []
    seen: set[tuple[Any, ...]] = set()
    for e in errors:
        loc = tuple(e["loc"])
        if loc and isinstance(loc[-1], str) and loc[-1].startswith(_UNION_TAGS):
            loc = loc[:-1]
            if loc in seen:
                continue
            seen.add(loc)
            own = e["type"] in _OWN_MESSAGE
            out.append((loc, e["msg"] if own else _message(e, CATEGORY_ERROR)))
        else:
            out.append((loc, _message(e, e["msg"])))
    return out


def _message(error: Mapping[str, Any], default: str) -> str:
    # The pattern itself tells a caller little.
    return f"Input {TEXT_ERROR}" if error["type"] == "string_pattern_mismatch" else default


def applicant_model(schema: Schema) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, spec in schema.features.items():
        fields[name] = (_feature_type(spec), Field(..., description=f"{spec.type} feature"))
    return create_model(
        "Applicant",
        __config__=ConfigDict(extra="forbid", frozen=True),
        **fields,
    )


def _feature_type(spec: FeatureSpec) -> Any:
    if spec.type == "numeric" and spec.special:
        check = _SpecialOrRange(spec)
        base: Any = Annotated[
            float,
            Field(allow_inf_nan=False, strict=True),
            AfterValidator(check),
            WithJsonSchema(check.json_schema()),
        ]
    elif spec.type == "numeric":
        base = Annotated[float, Field(ge=spec.min, le=spec.max, allow_inf_nan=False, strict=True)]
    else:
        base = Category
    return base | None if spec.missing == "impute" else base


class _SpecialOrRange:
    """A number inside the feature's `min`/`max`, or exactly one of its special codes (which
    the schema requires to lie outside that range). A Python check, so only on features that
    declare codes: the core range check of the others stays in pydantic-core."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.lo = -math.inf if spec.min is None else spec.min
        self.hi = math.inf if spec.max is None else spec.max
        self.codes = frozenset(spec.special)
        shown = ", ".join(f"{c:g}" for c in spec.special)
        self.message = f"Input should be {_span(spec)}, or one of the special codes {shown}"

    def __call__(self, value: float) -> float:
        if self.lo <= value <= self.hi or value in self.codes:
            return value
        raise PydanticCustomError("range_or_special", self.message)

    def json_schema(self) -> dict[str, Any]:
        """What `__call__` accepts, as JSON Schema: the range, or one of the codes."""
        span: dict[str, Any] = {"type": "number"}
        if math.isfinite(self.lo):
            span["minimum"] = self.lo
        if math.isfinite(self.hi):
            span["maximum"] = self.hi
        return {"anyOf": [span, {"enum": sorted(self.codes)}]}


def _span(spec: FeatureSpec) -> str:
    if spec.min is not None and spec.max is not None:
        return f"between {spec.min:g} and {spec.max:g}"
    if spec.min is not None:
        return f"greater than or equal to {spec.min:g}"
    return f"less than or equal to {spec.max:g}"


def _context_type(spec: Any) -> Any:
    if spec.type == "string":
        return text(128) | None
    if spec.type == "integer":
        lo = -SAFE_INT if spec.min is None else max(-SAFE_INT, math.ceil(spec.min))
        hi = SAFE_INT if spec.max is None else min(SAFE_INT, math.floor(spec.max))
        return integer(lo, hi) | None
    number = Field(ge=spec.min, le=spec.max, allow_inf_nan=False, strict=True)
    return Annotated[float, number] | None


def columnar_model(schema: Schema, policy: Policy, example: dict[str, Any]) -> type[BaseModel]:
    """The columnar batch request: one list per feature, optional lists of context signals,
    stances and references; all the same length."""
    rows = Field(..., min_length=1, max_length=MAX_BATCH)
    feature_fields: dict[str, Any] = {
        name: (list[_feature_type(spec)], rows)  # type: ignore[misc]
        for name, spec in schema.features.items()
    }
    features = create_model(
        "FeatureColumns", __config__=ConfigDict(extra="forbid", frozen=True), **feature_fields
    )
    optional = Field(None, min_length=1, max_length=MAX_BATCH)
    context_fields: dict[str, Any] = {
        name: (list[_context_type(spec)] | None, optional)  # type: ignore[misc]
        for name, spec in policy.context.items()
    }
    context: Any = create_model(
        "ContextColumns", __config__=ConfigDict(extra="forbid", frozen=True), **context_fields
    )

    def same_length(self: Any) -> Any:
        n = len(next(iter(self.columns.__dict__.values())))
        named = [(f"columns.{k}", v) for k, v in self.columns.__dict__.items()]
        if self.context is not None:
            named += [(f"context.{k}", v) for k, v in self.context.__dict__.items()]
        named += [("stance", self.stance), ("reference", self.reference),
                  ("human_review_requested", self.human_review_requested)]  # fmt: skip
        for name, values in named:
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} values; the batch has {n} applicants")
        return self

    columns_example: dict[str, Any] = {
        "columns": {k: [v, v] for k, v in example["applicant"].items()},
        "context": {k: [v, None] for k, v in (example.get("context") or {}).items()},
        "stance": [None, "conservative"],
        "reference": ["app-1", "app-2"],
    }
    validators: dict[str, Any] = {"same_length": model_validator(mode="after")(same_length)}
    stance: Any = list[Literal["normal", "conservative"] | None] | None
    ref: Any = text(128)
    reference: Any = list[ref | None] | None
    fields: dict[str, Any] = {
        "language": (
            Language | None,
            Field(None, description="the texts' language: en or zh (default: Accept-Language's)"),
        ),
        "columns": (features, Field(..., description="one list per model feature, all required")),
        "context": (context | None, Field(None, description="policy signals; null: not sent")),
        "stance": (stance, Field(None, description="per applicant; null: the policy's stance")),
        "reference": (reference, Field(None, description="your own reference per applicant")),
        "human_review_requested": (
            list[Annotated[bool, Field(strict=True)]] | None,
            Field(None, min_length=1, max_length=MAX_BATCH,
                  description=f"per applicant: {HUMAN_REVIEW_TEXT}; null: nobody asks"),
        ),
    }  # fmt: skip
    return create_model(
        COLUMNAR,
        __config__=ConfigDict(
            extra="forbid", frozen=True, json_schema_extra={"examples": [columns_example]}
        ),
        __validators__=validators,
        **fields,
    )


def context_model(policy: Policy) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, spec in policy.context.items():
        fields[name] = (_context_type(spec), Field(None, description=spec.description))
    return create_model("Context", __config__=ConfigDict(extra="forbid", frozen=True), **fields)


def request_models(
    schema: Schema, policy: Policy, example: dict[str, Any]
) -> tuple[type[BaseModel], type[BaseModel]]:
    """(DecisionRequest, BatchRequest) for this model and policy, with a valid example."""
    applicant = applicant_model(schema)
    context: Any = context_model(policy) | None
    stance: Any = Literal["normal", "conservative"] | None
    fields: dict[str, Any] = {
        "applicant": (applicant, Field(..., description="the model's features, all required")),
        "context": (context, Field(None, description="policy signals the model does not use")),
        "stance": (stance, Field(None, description="default: the policy's stance")),
        "reference": (text(128) | None, Field(None, description="your own reference")),
        "human_review_requested": HUMAN_REVIEW,
        "joint": (
            JointRequest | None,
            Field(None, description="ask for a joint credit limit across participating lenders"),
        ),
    }
    language: Any = (
        Language | None,
        Field(
            None,
            description="the language of the decision's texts: en (English) or zh (Chinese); "
            "default: the Accept-Language header's, else English",
        ),
    )
    single = create_model(
        SINGLE,
        __config__=ConfigDict(
            extra="forbid", frozen=True, json_schema_extra={"examples": [example]}
        ),
        **fields,
        language=language,
    )
    # A batch's applications share its language (one set of texts per batch).
    item = create_model(
        "BatchApplication", __config__=ConfigDict(extra="forbid", frozen=True), **fields
    )
    batch = create_model(
        BATCH,
        __config__=ConfigDict(
            extra="forbid",
            frozen=True,
            json_schema_extra={"examples": [{"applications": [example, example]}]},
        ),
        applications=(list[item], Field(..., min_length=1, max_length=MAX_BATCH)),  # type: ignore[valid-type]
        language=language,
    )
    return single, batch


class ReviewIn(BaseModel):
    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"final_decision": "approve", "reviewer": "officer-17",
         "note": "Bank statements show steady card revenue; approved at a reduced limit."}
    ]}}  # fmt: skip
    final_decision: Literal["approve", "decline"]
    reviewer: text(128, min_length=1)  # type: ignore[valid-type]
    note: text(4000, min_length=1, pattern=NOTE)  # type: ignore[valid-type]


class ReasonEntry(BaseModel):
    """A reason without its contribution: an entry of a columnar batch's `reason_table`."""

    code: str
    text: str
    kind: Literal["policy", "model"]
    feature: str | None = None
    direction: Literal["toward_default", "toward_approval"] | None = Field(
        None,
        description="which way this reason pushed the decision: toward default (against "
        "approval) or toward approval; null for a referral that is not about risk (values "
        "outside the model's training data, exposure unavailable)",
    )


class ReasonOut(ReasonEntry):
    contribution: float | None = Field(
        None, description="log-odds this feature added toward default vs the average applicant"
    )


class FlagOut(BaseModel):
    code: str
    action: str
    text: str
    points: int = 0


class ModelInfo(BaseModel):
    version: str = Field(description="SHA-256 of the signed manifest")
    signing_key: str = Field(description="key id of the coordinator that signed the model")
    kind: str
    trained_round: int | None
    stage: str = Field(
        "final", description="final (a run's final model) or checkpoint (served on request)"
    )
    run_id: int | None = Field(None, description="the training run, as the signed model says")


class DecisionOut(BaseModel):
    decision_id: str
    status: Literal["decided", "under_review"]
    decision: Literal["approve", "decline", "refer"]
    probability_of_default: float | None = Field(
        description="null only when not scored: a vertical model's feature party gave no "
        "routing for the applicant (referred, the flags say which and why)"
    )
    score: int | None = Field(
        description="350-950; 660 = PD 10 %, +50 per doubling of the odds (null: not scored)"
    )
    policy_score: int | None = Field(
        description="score after policy adjustments (what cut-offs use; null: not scored)"
    )
    stance: str
    reasons: list[ReasonOut]
    policy_flags: list[FlagOut]
    rules_not_evaluated: list[str]
    unseen_values: dict[str, str] = Field(
        description="categories the model never saw in training: the applicant is referred"
    )
    out_of_range: dict[str, str] = Field(
        description="numbers beyond what the model was trained on: the applicant is referred"
    )
    model: ModelInfo
    policy_version: str
    reference: str | None = None
    joint_credit: JointOut | None = None
    created_at: str
    language: Language = Field(
        description="the language of every text in this decision (what the request asked "
        "for, when the policy has it; else English)"
    )
    human_review_requested: bool = Field(
        False,
        description="the applicant asked for a person to decide: under review until a "
        "reviewer's final decision",
    )


class BatchOut(BaseModel):
    decisions: list[DecisionOut]


class ColumnarDecisions(BaseModel):
    """One list per field of `DecisionOut`, one entry per applicant in request order."""

    decision_id: list[str]
    status: list[Literal["decided", "under_review"]]
    decision: list[Literal["approve", "decline", "refer"]]
    probability_of_default: list[float]
    score: list[int]
    policy_score: list[int]
    stance: list[str]
    reason_ids: list[list[int]] = Field(
        description="each applicant's reasons, ranked as in `DecisionOut.reasons`, as indexes "
        "into `reason_table`"
    )
    contributions: list[list[float | None]] = Field(
        description="each applicant's log-odds pushed toward default by every feature, in "
        "`contribution_features` order (a model reason's `contribution`)"
    )
    flag_ids: list[list[int]] = Field(
        description="each applicant's policy flags as indexes into `rules`"
    )
    not_evaluated_ids: list[list[int]] = Field(
        description="rules not evaluated for the applicant (context its request did not carry, "
        "fields the model does not have), as indexes into `rules`"
    )
    reasons: list[list[ReasonOut]] | None = Field(None, description="only with `?expand=true`")
    policy_flags: list[list[FlagOut]] | None = Field(None, description="only with `?expand=true`")
    rules_not_evaluated: list[list[str]] | None = Field(
        None, description="only with `?expand=true`"
    )
    unseen_values: list[dict[str, str]]
    out_of_range: list[dict[str, str]]
    reference: list[str | None]
    human_review_requested: list[bool] = Field(
        description="per applicant: asked for a person to decide (then under review)"
    )


class ColumnarOut(BaseModel):
    count: int
    decisions: ColumnarDecisions
    reason_table: list[ReasonEntry] = Field(
        description="the batch's distinct reasons: the policy's rules, then each model reason "
        "text given to some applicant"
    )
    contribution_features: list[str]
    rules: list[FlagOut] = Field(description="the policy's rules, as flags show them")
    model: ModelInfo
    policy_version: str
    created_at: str
    language: Language = Field(description="the language of every text in this batch")
