"""The eligibility service serving a vertical model (`jointcredit serve --model OUT/model
--vertical-kit KIT --party NAME=URL ...`): the bank's part of the model, verified as signed by
the bank's own key; for each applicant one signed query to each feature party's endpoint
(service/vertical_client.py), then the decision (service/vertical_decide.py), audited in the
service's hash-chained log before it is answered (the use case: service/vertical_decisions.py).

    POST /v1/decisions        one applicant: its features at the bank, plus `vertical`
                              (the applicant's identifier, as the parties key their data, and
                              its consent reference) and, as the horizontal service takes it,
                              `joint` (a joint credit limit: service/joint_limits.py)
    POST /v1/decisions:batch  up to 1,000 of them, each party asked once per distinct applicant
    GET  /v1/decisions/{id}   where it stands, as the horizontal service's
    GET  /v1/decisions/{id}/notice  the adverse-action notice, as the horizontal service's
    GET  /v1/reviews, POST /v1/reviews/{id}: as the horizontal service
    GET  /v1/monitoring       PSI of the score, CSI of each of the bank's features: the
                              applicants scored against the model's held-out reference, as
                              the horizontal service's (a part without one: unavailable)
    GET  /healthz /readyz /metrics
    GET  /docs /redoc /openapi.json   the API's pages, the generated bodies included

The horizontal service's columnar batches are not served for a vertical model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from jointcredit.models.artifact import ArtifactError
from jointcredit.models.reference import Reference
from jointcredit.models.vertical.artifact import LabelPart, load_label_part
from jointcredit.models.vertical.scorecard.artifact import ScorecardLabelPart, is_scorecard
from jointcredit.models.vertical.scorecard.artifact import load_label_part as load_scorecard_part
from jointcredit.service import docs, errors, openapi
from jointcredit.service.anchors import AnchorWriter
from jointcredit.service.audit import LOCK_TIMEOUT, AuditLog
from jointcredit.service.auth import Authenticator, load_keys
from jointcredit.service.exposure_http import ExposureClient
from jointcredit.service.limits import ReadLimits
from jointcredit.service.loader import (
    StartupError,
    exposure_client,
    freeze_start_up,
    open_anchors,
    single_threaded_math,
)
from jointcredit.service.metrics import Metrics
from jointcredit.service.middleware import BodyLimit
from jointcredit.service.monitoring import DEFAULT_WINDOW, Monitor
from jointcredit.service.notices import NoticeService
from jointcredit.service.policy import load_policy
from jointcredit.service.progress import Progress
from jointcredit.service.records import Responses
from jointcredit.service.reviews import ReviewService
from jointcredit.service.routers import monitoring, notices, ops, progress, reviews
from jointcredit.service.schemas import ModelInfo, ReviewIn
from jointcredit.service.vertical_client import PartyLink, VerticalClient
from jointcredit.service.vertical_decide import VerticalDecider
from jointcredit.service.vertical_decisions import VerticalDecisions, request_models
from jointcredit.service.vertical_decisions import router as decisions_router
from jointcredit.service.vertical_kit import KitError, load_kit
from jointcredit.service.vertical_scorecard_decide import ScorecardDecider
from jointcredit.service.writer import AuditWriter
from jointcredit.trust.errors import TrustError
from jointcredit.trust.store import load_store

KIND = "vertical-gbdt"
SCORECARD_KIND = "vertical-scorecard"


@dataclass
class VerticalService:
    """What start-up verified and built (the attribute names the shared routers read)."""

    decider: VerticalDecider
    client: VerticalClient
    audit: AuditLog
    auth: Authenticator
    model_info: ModelInfo
    request: type[BaseModel]
    batch_request: type[BaseModel]
    anchors: AnchorWriter | None = None
    exposure: ExposureClient | None = None  # None: joint limits are referred
    reference: Reference | None = None  # the label part's: stability monitoring
    monitoring_window: int = DEFAULT_WINDOW
    workers: int = 1  # the worker processes serving it (service-wide bounds are shared)


def load_vertical_service(
    model_dir: Path,
    trust_file: Path,
    kit_dir: Path,
    endpoints: dict[str, str],
    *,
    policy_file: Path | None = None,
    db_url: str | None = None,
    api_keys: Path | None = None,
    coordinator_key_id: str | None = None,
    timeout: float = 0.5,
    audit_lock_timeout: float = LOCK_TIMEOUT,
    anchors_file: Path | None = None,
    anchor_key: Path | None = None,
    anchor_every: int = 1000,
    anchor_seconds: float = 60.0,
    exposure_registry: Path | None = None,
    federation_key: Path | None = None,
    monitoring_window: int = DEFAULT_WINDOW,
    workers: int = 1,
    transport: httpx.AsyncBaseTransport | None = None,  # tests: the parties in process
) -> VerticalService:
    single_threaded_math()
    scorecard = is_scorecard(model_dir)
    label: LabelPart | ScorecardLabelPart
    try:
        trust = load_store(trust_file, pin=coordinator_key_id)
        if scorecard:
            label = load_scorecard_part(model_dir, trust)
        else:
            label = load_label_part(model_dir, trust)
        kit = load_kit(kit_dir, pin=coordinator_key_id)
    except (TrustError, ArtifactError, KitError) as exc:
        raise StartupError(f"vertical model or kit does not verify: {exc}") from exc
    if kit.institution != label.card.label_party:
        raise StartupError(
            f"the kit is {kit.institution}'s, the model's label party is {label.card.label_party}"
        )
    needed = set(label.card.parties)
    if set(endpoints) != needed:
        raise StartupError(
            f"--party NAME=URL for exactly the model's feature parties: {sorted(needed)} "
            f"(given {sorted(endpoints)})"
        )
    try:
        policy = load_policy(policy_file)
    except ValueError as exc:
        raise StartupError(f"policy: {exc}") from exc
    decider: VerticalDecider
    try:
        if isinstance(label, ScorecardLabelPart):
            decider = ScorecardDecider(label, policy)
            n_bins: dict[str, tuple[int, ...]] = decider.n_bins  # each platform's answer
        else:
            decider, n_bins = VerticalDecider(label, policy), {}
    except ValueError as exc:
        raise StartupError(f"vertical model or policy: {exc}") from exc
    exposure = exposure_client(exposure_registry, federation_key, trust)
    links = [
        PartyLink(p, p, endpoints[p], label.card.parties[p].splits, n_bins.get(p))
        for p in decider.parties
    ]
    # The model's id as each party knows it: the SHA-256 of that party's signed part, which
    # the bank's signed card records.
    model_ids = {p: label.card.parties[p].part_sha256 for p in decider.parties}
    client = VerticalClient(kit, links, model_ids, timeout=timeout, transport=transport)
    keys = load_keys(api_keys) if api_keys is not None else None
    if keys is None or not keys.keys:
        raise StartupError("no API keys: create one with `jointcredit apikey new`")
    here = model_dir.resolve().parent
    url = db_url or f"sqlite:///{here / 'decisions.sqlite'}"
    audit = AuditLog(url, lock_timeout=audit_lock_timeout)
    anchors = open_anchors(audit, here, anchors_file, anchor_key, anchor_every, anchor_seconds)
    info = ModelInfo(
        version=label.verified.manifest_sha256, signing_key=label.verified.key_id,
        kind=SCORECARD_KIND if scorecard else KIND,
        trained_round=None, stage="final", run_id=None,
    )  # fmt: skip
    single, batch = request_models(label.card.data_schema, decider)
    return VerticalService(
        decider, client, audit, Authenticator(keys), info, single, batch, anchors, exposure,
        label.reference, monitoring_window, workers,
    )  # fmt: skip


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    freeze_start_up()
    yield
    # Every close runs even when an earlier one raises (last pushed, first run).
    async with AsyncExitStack() as closing:
        closing.callback(app.state.service.audit.close)
        if app.state.monitor is not None:
            closing.callback(app.state.monitor.close)
        if app.state.service.exposure is not None:
            closing.push_async_callback(app.state.service.exposure.close)
        closing.push_async_callback(app.state.service.client.close)
        await app.state.writer.close()


def create_vertical_app(service: VerticalService, *, max_body: int = 2 * 2**20) -> FastAPI:
    """The app (`max_body`: the largest request body accepted, bytes; a 1,000-applicant
    batch is about 1 MiB)."""
    metrics = Metrics()
    writer = AuditWriter(service.audit, anchors=service.anchors)
    app = FastAPI(
        lifespan=_lifespan, title="jointcredit eligibility service (vertical model)",
        version=service.decider.policy.version, docs_url=None, redoc_url=None,
    )  # fmt: skip
    state = app.state
    state.service, state.metrics, state.writer = service, metrics, writer
    state.reads = ReadLimits()
    state.monitor = (
        None
        if service.reference is None
        else Monitor(service.reference, service.audit.url, metrics, size=service.monitoring_window)
    )
    state.decisions = VerticalDecisions(service, writer, metrics, state.monitor)
    responses = Responses(service.audit)
    state.reviews = ReviewService(service.audit, writer, responses, state.reads)
    state.progress = Progress(service.audit, responses, state.reads)
    state.notices = NoticeService(service.audit, service.decider, responses, state.reads)
    app.add_middleware(BodyLimit, limit=max_body)
    errors.install(app)
    routers = (decisions_router, progress.router, notices.router, reviews.router,
               monitoring.router, ops.router)  # fmt: skip
    for r in routers:
        app.router.routes.extend(r.routes)
    openapi.extend(app, [service.request, service.batch_request, ReviewIn], {})
    docs.install(app)
    return app
