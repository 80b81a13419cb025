"""Operations: liveness, readiness (model, policy, the audit chain's head, and whether the
audit log can be written) and metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from jointcredit.service import dependencies
from jointcredit.service.loader import Service
from jointcredit.service.metrics import Metrics
from jointcredit.service.openapi import NotReady, json_responses, responses
from jointcredit.service.schemas import ModelInfo

router = APIRouter(tags=["ops"])


class AuditHead(BaseModel):
    seq: int = Field(description="the audit log's last entry")
    sha256: str = Field(description="that entry's hash: the head of the hash chain")


class Ready(BaseModel):
    status: str = Field(description='"ready"')
    model: ModelInfo
    policy_version: str
    audit_head: AuditHead


@router.get(
    "/healthz", responses=responses(), summary="Check the service is running",
    response_description='`{"status": "ok"}`',
)  # fmt: skip
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Says nothing about the audit log (see `/readyz`)."""
    return {"status": "ok"}


# Below a probe's usual 1 s timeout; an append holds the write lock for milliseconds.
READY_LOCK_WAIT = 0.5


@router.get(
    "/readyz",
    response_model=None,
    responses={
        **responses(),
        200: {"model": Ready},
        503: {"model": NotReady, "description": "not ready: the audit log cannot be written"},
    },
    summary="Check the service can decide",
    response_description="ready: the model, the policy version and the audit log's head",
)
async def readyz(
    service: Annotated[Service, Depends(dependencies.service)],
) -> dict[str, Any] | JSONResponse:
    """Readiness: ready when the audit log can be written, which every decision needs; while it
    cannot, decisions would fail with 503."""
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


@router.get(
    "/metrics", response_class=PlainTextResponse, responses=json_responses(),
    summary="Prometheus metrics", response_description="Prometheus' text format",
)  # fmt: skip
async def metrics(metrics: Annotated[Metrics, Depends(dependencies.metrics)]) -> PlainTextResponse:
    """Decisions by outcome, latencies, audit commits and the stability gauges, added up over
    every worker process."""
    return PlainTextResponse(metrics.text(), media_type=CONTENT_TYPE_LATEST)
