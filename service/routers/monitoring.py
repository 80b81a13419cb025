"""Stability monitoring: PSI of the score and CSI of each feature over the window of recently
served applicants, against the model's training reference (service/monitoring.py)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from jointcredit.service import dependencies
from jointcredit.service.auth import ApiKey
from jointcredit.service.openapi import responses

router = APIRouter(tags=["monitoring"])


class StabilityIndex(BaseModel):
    value: float | None = Field(description="the index; null while the window is empty")
    band: Literal["stable", "watch", "act"] = Field(
        description="< 0.1 stable, 0.1-0.25 watch, > 0.25 act"
    )


class Window(BaseModel):
    size: int = Field(description="the window's size: the last this many applicants decided")
    applicants: int = Field(description="applicants in the window now")


class ReferenceInfo(BaseModel):
    rows: int = Field(description="training rows the reference counts")
    institutions: list[str]


class MonitoringOut(BaseModel):
    """The served applicants' stability against the training distribution."""

    available: bool = Field(description="false: the model carries no reference distribution")
    window: Window | None = None
    reference: ReferenceInfo | None = None
    epsilon: float | None = Field(default=None, description="share an empty bin counts as")
    score: StabilityIndex | None = Field(default=None, description="PSI of the 350-950 model score")
    features: dict[str, StabilityIndex] = Field(
        default_factory=dict, description="CSI of each feature"
    )


@router.get(
    "/v1/monitoring", response_model=MonitoringOut, responses=responses(401, 429),
    summary="Check the served applicants' stability against training",
    response_description="PSI of the score and CSI of each feature, with their bands",
)  # fmt: skip
async def monitoring(
    request: Request, key: Annotated[ApiKey, Depends(dependencies.api_key)]
) -> MonitoringOut:
    """The population stability index of the score and the characteristic stability index of
    each feature, over the most recently decided applicants against the model's training rows.
    Counts against the API key's allowance of expensive reads."""
    monitor = request.app.state.monitor
    if monitor is None:
        return MonitoringOut(available=False)
    async with request.app.state.reads.expensive(key.key_id):
        snapshot = await asyncio.to_thread(monitor.flush)
    return MonitoringOut(available=True, **snapshot)
