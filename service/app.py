"""The eligibility service's HTTP API (FastAPI): `create_app` wires the loaded service into an
app. The routes live in service/routers/, the use cases they call in service/decisions.py and
service/reviews.py.

    POST /v1/decisions            one applicant -> decision, PD, score, reasons, flags
    POST /v1/decisions:batch      up to 10,000 applicants in one call
    POST /v1/decisions:columnar   the same, one list per feature (bulk scoring)
    GET  /v1/decisions/{id}       progress: received, scored, under review, decided
    GET  /v1/decisions/{id}/notice  the adverse-action notice, in English or Chinese
    GET  /v1/reviews              the caller's referred applications awaiting review
    GET  /v1/monitoring           PSI of the score, CSI of each feature: the recently served
                                  applicants against the training reference (monitoring.py)
    POST /v1/reviews/{id}         resolve one with a reviewer note (audited)
    GET  /healthz /readyz /metrics (Prometheus) /docs /redoc (OpenAPI, with valid examples;
         served with their assets, no CDN: service/docs.py)

Each calling institution authenticates with `Authorization: Bearer <key>` and sees only its
own decisions and review items. Errors never carry stack traces (service/errors.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from jointcredit.service import docs, errors, openapi
from jointcredit.service.decisions import DecisionService
from jointcredit.service.limits import ReadLimits
from jointcredit.service.loader import Service, freeze_start_up
from jointcredit.service.metrics import Metrics
from jointcredit.service.middleware import MAX_BODY, BodyLimit
from jointcredit.service.monitoring import Monitor
from jointcredit.service.notices import NoticeService
from jointcredit.service.progress import Progress
from jointcredit.service.records import Responses
from jointcredit.service.reviews import ReviewService
from jointcredit.service.routers import decisions, monitoring, notices, ops, progress, reviews
from jointcredit.service.schemas import ReviewIn
from jointcredit.service.writer import AuditWriter

__all__ = ["Service", "create_app"]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    freeze_start_up()
    yield
    # Every close runs even when an earlier one raises (last pushed, first run).
    async with AsyncExitStack() as closing:
        closing.callback(app.state.service.audit.close)  # checkpoint thread, lock file
        if app.state.monitor is not None:
            closing.callback(app.state.monitor.close)
        if app.state.service.exposure is not None:
            closing.push_async_callback(app.state.service.exposure.close)
        await app.state.writer.close()


def create_app(service: Service, *, max_body: int = MAX_BODY) -> FastAPI:
    """The app (`max_body`: the largest request body accepted, bytes; larger ones get 413)."""
    metrics = Metrics()
    writer = AuditWriter(service.audit, anchors=service.anchors)
    metrics.count_commits(lambda: writer.groups)
    responses = Responses(service.audit)
    reads = ReadLimits()
    app = FastAPI(
        lifespan=_lifespan,
        title="jointcredit eligibility service",
        version=service.decider.policy.version,
        description="Decisions with reasons from a verified, signed federated model.",
        docs_url=None,  # served by `docs`, with no asset from outside the service
        redoc_url=None,
    )
    state = app.state
    state.service, state.metrics, state.writer, state.reads = service, metrics, writer, reads
    reference = service.decider.model.reference
    state.monitor = (
        None
        if reference is None
        else Monitor(reference, service.audit.url, metrics, size=service.monitoring_window)
    )
    state.decisions = DecisionService(service, writer, metrics, state.monitor)
    state.reviews = ReviewService(service.audit, writer, responses, reads)
    state.progress = Progress(service.audit, responses, reads)
    state.notices = NoticeService(service.audit, service.decider, responses, reads)
    app.add_middleware(BodyLimit, limit=max_body)
    errors.install(app)
    # The routers' routes join the app's own list: `include_router` in this FastAPI keeps a
    # router nested and per request matches through it twice and rebuilds the route's handler,
    # which the routes need none of (no prefix; tags are the routers' own; no dependency
    # overrides).
    routers = (decisions.router, progress.router, notices.router, reviews.router,
               monitoring.router, ops.router)  # fmt: skip
    for router in routers:
        app.router.routes.extend(router.routes)
    d = state.decisions
    examples = {("POST", "/v1/decisions"): d.example}
    openapi.extend(app, [d.single, d.batch, d.columnar, ReviewIn], examples)
    docs.install(app)
    return app
