"""Decisions: one applicant, a batch as rows, a batch as columns, and a decision's progress.

The request bodies are generated per model and policy, so the routes read the raw body and the
use case validates it (service/decisions.py); service/openapi.py documents the bodies. The
routes' docstrings are the OpenAPI page's descriptions: written for the API's users."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from jointcredit.service import dependencies
from jointcredit.service.decisions import DecisionService
from jointcredit.service.languages import LANGUAGES
from jointcredit.service.openapi import responses
from jointcredit.service.schemas import (
    BATCH,
    COLUMNAR,
    SINGLE,
    BatchOut,
    ColumnarOut,
    DecisionOut,
)

router = APIRouter(tags=["decisions"])
Caller = Annotated[str, Depends(dependencies.institution)]
Decisions = Annotated[DecisionService, Depends(dependencies.decisions)]
DECIDE = responses(401, 413, 422, 503)


def request_body(name: str) -> dict[str, Any]:
    """A route's `openapi_extra`: its body is the generated model `name`, and the
    Accept-Language header."""
    schema = {"$ref": f"#/components/schemas/{name}"}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "parameters": [ACCEPT_LANGUAGE],
    }


# Documented here, read by `_language`: a declared header parameter would be analysed by
# FastAPI on every call.
ACCEPT_LANGUAGE: dict[str, Any] = {
    "name": "Accept-Language",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "the reasons' language when the body names none (RFC 9110 weights; "
    f"supported: {', '.join(LANGUAGES)}; default English); one that accepts none of them is a "
    "422",
}


def _language(request: Request) -> str | None:
    return request.headers.get("accept-language")


def _json(content: bytes) -> Response:
    # Built to the response model's shape (tested) and serialised once, not re-validated.
    return Response(content, media_type="application/json")


@router.post(
    "/v1/decisions", response_model=DecisionOut, responses=DECIDE,
    openapi_extra=request_body(SINGLE),
    summary="Decide one application",
    response_description="the decision, written to the audit log before it is answered",
)  # fmt: skip
async def decide_one(request: Request, institution: Caller, decisions: Decisions) -> Response:
    """Score one applicant with the verified model and apply the credit policy: approve,
    decline or refer to a person, with the score, the probability of default and up to four
    principal reasons in the applicant's language. Context signals the policy's rules use go in
    `context`; a rule whose signal is not sent is listed in `rules_not_evaluated`. `joint` asks
    for a credit limit shared with the other lenders."""
    return _json(await decisions.one(await request.body(), institution, _language(request)))


@router.post(
    "/v1/decisions:batch", response_model=BatchOut, responses=DECIDE,
    openapi_extra=request_body(BATCH),
    summary="Decide a batch of applications",
    response_description="one decision per application, in request order",
)  # fmt: skip
async def decide_batch(request: Request, institution: Caller, decisions: Decisions) -> Response:
    """Up to 10,000 applications, each as for a single decision, decided together and
    audited as one entry."""
    return _json(await decisions.rows(await request.body(), institution, _language(request)))


@router.post(
    "/v1/decisions:columnar",
    response_model=ColumnarOut,
    responses=DECIDE,
    openapi_extra=request_body(COLUMNAR),
    summary="Decide a batch given as columns",
    response_description="one list per decision field, one entry per applicant",
)
async def decide_columnar(
    request: Request,
    institution: Caller,
    decisions: Decisions,
    expand: bool = Query(
        False,
        description="also give each applicant's `reasons`, `policy_flags` and "
        "`rules_not_evaluated` in full, as single decisions do (by default they are ids "
        "into the response's `reason_table` and `rules`)",
    ),
) -> Response:
    """Bulk scoring, one list per feature in and one list per output field out. No joint
    limits here: those need a secure sum per applicant."""
    body = await request.body()
    return _json(await decisions.columns(body, institution, expand, _language(request)))
