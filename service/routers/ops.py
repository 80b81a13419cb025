"""Operations: liveness, readiness (model, policy, the audit chain's head, and whether the
audit log can be written) and metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from jointcredit.service import dependencies
from jointcredit.service.loader import Service
from jointcredit.service.metrics import Metrics

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


# Below a probe's usual 1 s timeout; an append holds the write lock for milliseconds.
READY_LOCK_WAIT = 0.5


@router.get(
    "/readyz",
    response_model=None,
    responses={503: {"description": "not ready: the audit log cannot be written"}},
)
async def readyz(
    service: Annotated[Service, Depends(dependencies.service)],
) -> dict[str, Any] | JSONResponse:
    """Ready when the audit log's write lock can be taken (decisions would otherwise wait for
    it and fail with 503)."""
    if not await asyncio.to_thread(service.audit.writable, READY_LOCK_WAIT):
        detail = "the audit log cannot be written: its write lock is held elsewhere"
        return JSONResponse({"status": "not ready", "detail": detail}, 503)
    seq, head = service.audit.head()
    return {
        "status": "ready",
        "model": service.model_info.model_dump(),
        "policy_version": service.decider.policy.version,
        "audit_head": {"seq": seq, "sha256": head},
    }


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(metrics: Annotated[Metrics, Depends(dependencies.metrics)]) -> PlainTextResponse:
    return PlainTextResponse(metrics.text(), media_type=CONTENT_TYPE_LATEST)
