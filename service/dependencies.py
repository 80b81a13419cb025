"""What the routers depend on, read from the app's state (`request.app.state`, set by the app
factories): the calling institution, from its API key, and the use-case objects.

All `async`: FastAPI runs a plain `def` dependency in its thread pool, a hop per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from jointcredit.service.auth import ApiKey, AuthError
from jointcredit.service.exposure import ShareEndpoint

if TYPE_CHECKING:
    from jointcredit.service.decisions import DecisionService
    from jointcredit.service.loader import Service
    from jointcredit.service.metrics import Metrics
    from jointcredit.service.notices import NoticeService
    from jointcredit.service.progress import Progress
    from jointcredit.service.reviews import ReviewService

# HTTPBearer documents the scheme in OpenAPI (and costs less per request than a `Header`
# parameter, which FastAPI analyses on every call).
bearer = HTTPBearer(auto_error=False, description="an institution's API key")


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def institution(request: Request, credentials: Credentials) -> str:
    """The calling institution; 401 without a valid key."""
    return (await api_key(request, credentials)).institution


async def api_key(request: Request, credentials: Credentials) -> ApiKey:
    """The caller's API key (its institution, and its id for per-key limits); 401 without a
    valid key."""
    authorization = None if credentials is None else f"Bearer {credentials.credentials}"
    state = request.app.state
    try:
        found: ApiKey = state.service.auth.key(authorization)
    except AuthError as exc:
        state.metrics.error(401)
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
    return found


async def decisions(request: Request) -> DecisionService:
    found: DecisionService = request.app.state.decisions
    return found


async def reviews(request: Request) -> ReviewService:
    found: ReviewService = request.app.state.reviews
    return found


async def progress(request: Request) -> Progress:
    found: Progress = request.app.state.progress
    return found


async def notices(request: Request) -> NoticeService:
    found: NoticeService = request.app.state.notices
    return found


async def service(request: Request) -> Service:
    found: Service = request.app.state.service
    return found


async def metrics(request: Request) -> Metrics:
    found: Metrics = request.app.state.metrics
    return found


async def share_endpoint(request: Request) -> ShareEndpoint:
    found: ShareEndpoint = request.app.state.share_endpoint
    return found
