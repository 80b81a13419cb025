"""An institution's exposure endpoint (`jointcredit exposure serve`): its masked share of a
secure sum, for holders of the federation key only (service/exposure.py)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import ValidationError

from jointcredit.service.dependencies import share_endpoint
from jointcredit.service.exposure import (
    ISSUED_HEADER,
    MAC_HEADER,
    ExposureError,
    ShareEndpoint,
    ShareRequest,
    ShareResponse,
    header_problem,
    request_problem,
)

router = APIRouter()

Endpoint = Annotated[ShareEndpoint, Depends(share_endpoint)]


@router.post(
    "/v1/exposure/share", response_model=ShareResponse,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ShareRequest.model_json_schema()}}}},
)  # fmt: skip
async def share(request: Request, endpoint: Endpoint) -> ShareResponse:
    """Unauthenticated, altered or stale requests get 401 and use up no query id. The headers
    are checked before the body is read, and the body is bounded (413 over MAX_SHARE_BODY,
    institution_app's BodyLimit)."""
    mac, issued = request.headers.get(MAC_HEADER, ""), request.headers.get(ISSUED_HEADER, "")
    at = time.time()
    problem = header_problem(mac, issued, at)
    if problem is not None:
        raise HTTPException(401, problem)
    body = await request.body()
    problem = request_problem(endpoint.key, mac, issued, body, at)
    if problem is not None:
        raise HTTPException(401, problem)
    try:
        parsed = ShareRequest.model_validate_json(body)
    except ValidationError as exc:
        raise HTTPException(422, "not a share request") from exc
    try:
        return endpoint.institution.share(parsed)
    except ExposureError as exc:
        raise HTTPException(409, str(exc)) from exc


@router.get("/healthz")
async def healthz(endpoint: Endpoint) -> dict[str, str]:
    return {"status": "ok", "institution": endpoint.institution.institution}
