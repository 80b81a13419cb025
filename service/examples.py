"""The OpenAPI page's examples: a request for a realistic applicant, and the decision the served
model and policy really give it.

For a model of the SBA loans (the shipped sample's features) the request is a real repaid loan
from the sample's test rows, with context signals that trip none of the default policy's
rules, so every rule is evaluated and the answer is a plain approval (the model's own reasons
saying why). For any other model it is the average applicant (`applicants.typical`), with the
same context signals where the policy declares them. The response example is not written by
hand: it is the decider's answer to the request example, rendered as every decision is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from jointcredit.data.schema import FeatureSpec
from jointcredit.models.preprocessing import CategoricalFeature, PreprocessingSpec
from jointcredit.service.applicants import typical
from jointcredit.service.decide import Decider
from jointcredit.service.decision import Json
from jointcredit.service.policy import ContextField
from jointcredit.service.schemas import category_text

# A $100,000 loan, 90 % SBA-guaranteed, to an established ten-person manufacturer in
# Massachusetts, repaid: a test row of the shipped SBA sample (TD Bank's).
SBA_APPLICANT: dict[str, Any] = {
    "gross_approved": 100000,
    "sba_approved": 90000,
    "sba_share": 0.9,
    "employees": 10,
    "jobs_created": 0,
    "jobs_retained": 0,
    "business_age": "existing",
    "franchise": "no",
    "urban_rural": "undefined",
    "revolving_line": "no",
    "low_doc": "no",
    "sector": "33",
    "state": "MA",
}
# One lender in 90 days, 120 transactions of about $180 a month, most of them digital.
CONTEXT: dict[str, float] = {
    "recent_lenders_90d": 1,
    "transactions_30d": 120,
    "median_transaction_amount": 180.0,
    "online_activity_share": 0.6,
}
REFERENCE = "application-0001"
DECISION_ID = "5b0d3c1e9a7f4e2d8c6b1a0f9e8d7c6b"  # the example's; real ones are random


def _known(spec: PreprocessingSpec, applicant: Mapping[str, Any]) -> bool:
    """The applicant has exactly the model's features, each category one it was trained on."""
    if set(applicant) != {f.name for f in spec.features}:
        return False
    return all(
        applicant[f.name] in f.categories
        for f in spec.features
        if isinstance(f, CategoricalFeature)
    )


def _fits(value: float, field: ContextField) -> bool:
    if field.type == "string" or (field.type == "integer" and value != int(value)):
        return False
    return (field.min is None or value >= field.min) and (field.max is None or value <= field.max)


def example_request(
    spec: PreprocessingSpec,
    schema_features: Mapping[str, FeatureSpec],
    context: Mapping[str, ContextField],
) -> dict[str, Any]:
    """The request body the OpenAPI page shows for one applicant."""
    applicant = dict(SBA_APPLICANT) if _known(spec, SBA_APPLICANT) else None
    signals = {
        k: int(v) if context[k].type == "integer" else v
        for k, v in CONTEXT.items()
        if k in context and _fits(v, context[k])
    }
    return {
        "applicant": applicant or typical(spec, schema_features),
        "context": signals,
        "reference": REFERENCE,
    }


def example_decision(
    decider: Decider, request_model: type[BaseModel], example: Mapping[str, Any], model: Json,
    created_at: str,
) -> Json:  # fmt: skip
    """What the service answers the request `example` (no joint limit asked), as a response
    body: validated by the service's request model and decided as a request is."""
    request = request_model.model_validate(example).model_dump(mode="json")
    applicant = {k: category_text(v) for k, v in request["applicant"].items()}
    table = decider.decide_one(applicant, request["context"] or {}, request["stance"])
    return table.render(
        0, decision_id=DECISION_ID, reference=request["reference"], model=model,
        policy_version=decider.policy.version, created_at=created_at,
    )  # fmt: skip
