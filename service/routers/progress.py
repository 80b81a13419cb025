"""A decision read back (service/progress.py), for the horizontal and the vertical service
alike."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from jointcredit.service import dependencies
from jointcredit.service.auth import ApiKey
from jointcredit.service.openapi import responses
from jointcredit.service.progress import Progress

router = APIRouter(tags=["decisions"])


@router.get(
    "/v1/decisions/{decision_id}", responses=responses(401, 404, 422, 429),
    summary="Look up a decision and where it stands",
    response_description="its status, its stages so far and the decision as it was answered",
)  # fmt: skip
async def progress(
    decision_id: Annotated[str, Path(max_length=128)],
    key: Annotated[ApiKey, Depends(dependencies.api_key)],
    reads: Annotated[Progress, Depends(dependencies.progress)],
) -> dict[str, Any]:
    """One of the calling institution's decisions: received, scored, under review, decided
    (with the reviewer's final decision once there is one)."""
    return await reads.of(decision_id, key.institution, key.key_id)
