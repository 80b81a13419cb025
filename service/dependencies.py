"""What the routers depend on, read from the app's state (`request.app.state`, set by the app
factories): the calling institution (from its API key) and the use-case objects."""

from __future__ import annotations

from fastapi import Request

from jointcredit.service.exposure import ShareEndpoint


async def share_endpoint(request: Request) -> ShareEndpoint:
    endpoint: ShareEndpoint = request.app.state.share_endpoint
    return endpoint
