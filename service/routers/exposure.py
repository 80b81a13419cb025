"""An institution's exposure endpoint (`jointcredit exposure serve`): its masked share of a
secure sum, for holders of the federation key only (service/exposure.py)."""

from __future__ import annotations

import time
from typing import Annotated, Any

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
from jointcredit.service.openapi import Message

router = APIRouter()

Endpoint = Annotated[ShareEndpoint, Depends(share_endpoint)]
SHARE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Message, "description": "no valid MAC, or an issue time that is not fresh"},
    409: {
        "model": Message,
        "description": "its query id was already answered, or its "
        "participants are not the registry's",
    },
    413: {"model": Message, "description": "the request body is over 256 KiB"},
    422: {"model": Message, "description": "the body is not a share request"},
}


@router.post(
    "/v1/exposure/share", response_model=ShareResponse,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ShareRequest.model_json_schema()}}}},
    responses=SHARE_ERRORS, summary="Give this institution's masked share of an exposure",
    response_description="the masked share; only the sum over every institution means anything",
)  # fmt: skip
async def share(request: Request, endpoint: Endpoint) -> ShareResponse:
    """One query of a secure sum: this institution's exposure to the applicant, masked so that
    only the federation's total can be recovered. For holders of the federation key only:
    requests without a valid MAC over a fresh issue time get 401 and use up no query id."""
    # The headers are checked before the body is read; the body is bounded by the app's
    # BodyLimit (MAX_SHARE_BODY).
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


@router.get(
    "/healthz", summary="Check the exposure endpoint is running",
    response_description="the institution it answers for",
)  # fmt: skip
async def healthz(endpoint: Endpoint) -> dict[str, str]:
    """Liveness, naming the institution."""
    return {"status": "ok", "institution": endpoint.institution.institution}
