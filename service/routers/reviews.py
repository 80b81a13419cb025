"""Reviews: the caller's referred applications awaiting review, and resolving one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from jointcredit.service import dependencies
from jointcredit.service.openapi import responses
from jointcredit.service.reviews import ReviewService
from jointcredit.service.schemas import ReviewIn

router = APIRouter(tags=["reviews"])
Caller = Annotated[str, Depends(dependencies.institution)]
Reviews = Annotated[ReviewService, Depends(dependencies.reviews)]


@router.get("/v1/reviews", responses=responses(401, 422))
async def review_queue(institution: Caller, reviews: Reviews, limit: int = 100) -> dict[str, Any]:
    return reviews.queue(institution, limit)


@router.post("/v1/reviews/{decision_id}", responses=responses(401, 404, 409, 413, 422))
async def resolve(
    decision_id: Annotated[str, Path(max_length=128)],
    body: ReviewIn,
    institution: Caller,
    reviews: Reviews,
) -> dict[str, Any]:
    return await reviews.resolve(decision_id, institution, body)
