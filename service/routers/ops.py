"""Operations: liveness, readiness (model, policy and the audit chain's head) and metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from jointcredit.service import dependencies
from jointcredit.service.loader import Service
from jointcredit.service.metrics import Metrics

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(service: Annotated[Service, Depends(dependencies.service)]) -> dict[str, Any]:
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
