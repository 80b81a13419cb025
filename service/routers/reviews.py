"""Reviews: the caller's referred applications awaiting review, and resolving one.

A review's body is read raw and validated like a decision's (service/errors.py `parse`), so a
body that is not JSON is the same documented 422, not FastAPI's undocumented 400."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BeforeValidator

from jointcredit.service import dependencies
from jointcredit.service.auth import ApiKey
from jointcredit.service.errors import parse
from jointcredit.service.fields import SAFE_INT
from jointcredit.service.openapi import responses
from jointcredit.service.reviews import ReviewService
from jointcredit.service.schemas import ReviewIn

router = APIRouter(tags=["reviews"])
Caller = Annotated[str, Depends(dependencies.institution)]
Reviews = Annotated[ReviewService, Depends(dependencies.reviews)]


def _digits(value: object) -> object:
    # int() would also read " 1", "1_000" and "1.0" from a query string.
    if isinstance(value, str) and not DIGITS.fullmatch(value):
        raise ValueError("an integer written in digits")
    return value


DIGITS = re.compile(r"-?[0-9]{1,16}")
# Query first: FastAPI documents its bounds only then.
Limit = Annotated[
    int,
    Query(
        ge=-SAFE_INT,
        le=SAFE_INT,
        description="at most this many items (values outside 1-1000 are clamped to it)",
    ),
    BeforeValidator(_digits),
]
_REVIEW = {"$ref": f"#/components/schemas/{ReviewIn.__name__}"}


@router.get(
    "/v1/reviews", responses=responses(401, 422, 429),
    summary="List the applications awaiting review",
    response_description="the calling institution's referred applications, oldest first",
)  # fmt: skip
async def review_queue(
    key: Annotated[ApiKey, Depends(dependencies.api_key)], reviews: Reviews, limit: Limit = 100
) -> dict[str, Any]:
    """Applications referred to a person (by the policy, or because the applicant asked for
    one) that nobody has decided yet."""
    return await reviews.queue(key.institution, limit, key.key_id)


@router.post(
    "/v1/reviews/{decision_id}",
    responses=responses(401, 404, 409, 413, 422, 503),
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"application/json": {"schema": _REVIEW}}}},
    summary="Record a reviewer's final decision",
    response_description="the application's final decision",
)  # fmt: skip
async def resolve(
    decision_id: Annotated[str, Path(max_length=128)],
    request: Request,
    institution: Caller,
    reviews: Reviews,
) -> dict[str, Any]:
    """A person's approve or decline of an application awaiting review, with who decided and
    why; written to the audit log. An application is decided once."""
    body = parse(await request.body(), ReviewIn)
    return await reviews.resolve(decision_id, institution, body)
