"""Reviews: the caller's referred applications awaiting review, and resolving one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from jointcredit.service import dependencies
from jointcredit.service.auth import ApiKey
from jointcredit.service.reviews import ReviewService
from jointcredit.service.schemas import ReviewIn

router = APIRouter(tags=["reviews"])
Caller = Annotated[str, Depends(dependencies.institution)]
Reviews = Annotated[ReviewService, Depends(dependencies.reviews)]


@router.get("/v1/reviews")
async def review_queue(
    key: Annotated[ApiKey, Depends(dependencies.api_key)], reviews: Reviews, limit: int = 100
) -> dict[str, Any]:
    return await reviews.queue(key.institution, limit, key.key_id)


@router.post("/v1/reviews/{decision_id}")
async def resolve(
    decision_id: str, body: ReviewIn, institution: Caller, reviews: Reviews
) -> dict[str, Any]:
    return await reviews.resolve(decision_id, institution, body)
