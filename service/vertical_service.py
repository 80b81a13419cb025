"""The eligibility service serving a vertical model (`jointcredit serve --model OUT/model
--vertical-kit KIT --party NAME=URL ...`): the bank's part of the model, verified as signed by
the bank's own key; for each applicant one signed query to each feature party's endpoint
(service/vertical_client.py), then the decision (service/vertical_decide.py), audited in the
service's hash-chained log before it is answered.

    POST /v1/decisions        one applicant: its features at the bank, plus `vertical`
                              (the applicant's identifier, as the parties key their data, and
                              its consent reference)
    GET  /v1/reviews, POST /v1/reviews/{id}: as the horizontal service
    GET  /healthz /readyz /metrics

Batches, notices, joint limits and stability monitoring are the horizontal service's only.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from jointcredit.models.artifact import ArtifactError
from jointcredit.models.vertical.artifact import LabelPart, load_label_part
from jointcredit.service import dependencies, errors, records
from jointcredit.service.anchors import AnchorWriter
from jointcredit.service.anchors import anchor_key as anchor_key_file
from jointcredit.service.audit import LOCK_TIMEOUT, AuditLog
from jointcredit.service.auth import Authenticator, load_keys
from jointcredit.service.chain import now
from jointcredit.service.consent import ConsentRegistry
from jointcredit.service.decisions import _accepted
from jointcredit.service.errors import parse
from jointcredit.service.exposure_http import ExposureClient
from jointcredit.service.fields import text
from jointcredit.service.joint import JointRequest
from jointcredit.service.joint_limits import JointLimits
from jointcredit.service.languages import Language
from jointcredit.service.limits import ReadLimits
from jointcredit.service.loader import StartupError, exposure_client, single_threaded_math
from jointcredit.service.metrics import Metrics
from jointcredit.service.middleware import BodyLimit
from jointcredit.service.notices import NoticeService
from jointcredit.service.policy import Stance, load_policy
from jointcredit.service.records import Responses
from jointcredit.service.reviews import ReviewService
from jointcredit.service.routers import notices, ops, reviews
from jointcredit.service.schemas import (
    HUMAN_REVIEW,
    ModelInfo,
    applicant_model,
    category_text,
    context_model,
)
from jointcredit.service.vertical_client import PartyLink, VerticalClient
from jointcredit.service.vertical_decide import VerticalDecider
from jointcredit.service.vertical_kit import KitError, load_kit
from jointcredit.service.writer import AuditWriter
from jointcredit.trust.errors import TrustError
from jointcredit.trust.store import load_store

KIND = "vertical-gbdt"


class VerticalRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    applicant_id: text(128, min_length=1) = Field(  # type: ignore[valid-type]
        description="the applicant as the feature parties key their data (sent to them)"
    )
    consent_id: text(64, min_length=1) | None = Field(  # type: ignore[valid-type]
        None,
        description="the applicant's consent to use the feature parties' information, as "
        "registered at each party (purpose `vertical`); without one a party answers that "
        "consent is required and the application is referred",
    )


@dataclass
class VerticalService:
    """What start-up verified and built (the attribute names the shared routers read)."""

    decider: VerticalDecider
    client: VerticalClient
    audit: AuditLog
    auth: Authenticator
    model_info: ModelInfo
    request: type[BaseModel]
    anchors: AnchorWriter | None = None
    exposure: ExposureClient | None = None  # None: joint limits are referred


def request_model(label: LabelPart, decider: VerticalDecider) -> type[BaseModel]:
    schema = label.card.data_schema
    language: Any = (Language | None, Field(None, description="en or zh"))
    context: Any = (context_model(decider.policy) | None, Field(None))
    return create_model(
        "VerticalDecisionRequest",
        __config__=ConfigDict(extra="forbid", frozen=True),
        applicant=(applicant_model(schema), Field(..., description="the bank's features")),
        vertical=(VerticalRef, Field(..., description="whom to ask the feature parties about")),
        context=context,
        stance=(Stance | None, Field(None, description="default: the policy's")),
        reference=(text(128) | None, Field(None, description="your own reference")),
        human_review_requested=HUMAN_REVIEW,
        joint=(
            JointRequest | None,
            Field(None, description="ask for a joint credit limit across participating lenders"),
        ),
        language=language,
    )


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
    exposure_registry: Path | None = None,
    federation_key: Path | None = None,
    transport: httpx.AsyncBaseTransport | None = None,  # tests: the parties in process
) -> VerticalService:
    single_threaded_math()
    try:
        trust = load_store(trust_file, pin=coordinator_key_id)
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
    try:
        decider = VerticalDecider(label, policy)
    except ValueError as exc:
        raise StartupError(f"vertical model or policy: {exc}") from exc
    exposure = exposure_client(exposure_registry, federation_key, trust)
    links = [PartyLink(p, p, endpoints[p], label.card.parties[p].splits) for p in decider.parties]
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
    try:
        signer = anchor_key_file(anchor_key or here / "audit-anchor.key")
    except (OSError, TrustError) as exc:
        audit.close()
        raise StartupError(f"audit anchor key: {exc}") from exc
    anchors = AnchorWriter(anchors_file or here / "decisions.anchors.jsonl", signer, audit.head)
    info = ModelInfo(
        version=label.verified.manifest_sha256, signing_key=label.verified.key_id, kind=KIND,
        trained_round=None, stage="final", run_id=None,
    )  # fmt: skip
    return VerticalService(
        decider,
        client,
        audit,
        Authenticator(keys),
        info,
        request_model(label, decider),
        anchors,
        exposure,
    )


class VerticalDecisions:
    def __init__(self, service: VerticalService, writer: AuditWriter, metrics: Metrics) -> None:
        self.service, self.writer, self.metrics = service, writer, metrics
        self.model_info = service.model_info.model_dump(mode="json")
        policy = service.decider.policy
        self.joint = JointLimits(service.exposure, ConsentRegistry(service.audit), policy)

    async def one(self, raw: bytes, institution: str, accept: str | None = None) -> bytes:
        start = time.perf_counter()
        s = self.service
        item = parse(raw, s.request)
        language = item.language or _accepted(accept)
        stance = item.stance
        routing = await s.client.routing(item.vertical.applicant_id, item.vertical.consent_id)
        # The other lenders are asked about the applicant only once it can be scored.
        joint = item.joint if routing.complete else None
        exposure = (await self.joint.exposures([joint], institution))[0]
        received = now()
        request = item.model_dump(mode="json")
        applicant = {k: category_text(v) for k, v in request["applicant"].items()}
        if routing.complete:
            table = s.decider.decide_one(
                applicant, request["context"] or {}, stance, language, routing.sides
            )
        else:
            table = s.decider.unscored(stance, language, routing.problems)
        if item.human_review_requested:
            table.human_review = [True]
        limit, kept = self.joint.answer(table, 0, item.joint, exposure)
        scored = now()
        decision_id = os.urandom(16).hex()
        response = table.render(
            0, decision_id=decision_id, reference=item.reference, model=self.model_info,
            policy_version=s.decider.policy.version, created_at=scored, joint=limit,
        )  # fmt: skip
        out = orjson.dumps(response)
        asked = {p: "answered" for p in routing.sides}
        asked |= {p: f"{problem}: {why}" for p, (problem, why) in routing.problems.items()}
        record = {
            "response": response,
            "vertical": {"parties": asked, "seconds": round(routing.seconds, 6)},
            **kept,
        }
        if table.requested_review(0):
            record["human_review"] = "requested by the applicant"
        view = records.view_row(decision_id, institution, table.decision[0], scored,
                                out.decode(), table.requested_review(0))  # fmt: skip
        entry = records.decision_entry(institution, request, record, view, received, scored)
        await self.writer.append([entry])
        self.metrics.decided(table.decision)
        self.metrics.latency_one.observe(time.perf_counter() - start)
        return out


router = APIRouter(tags=["decisions"])


@router.post("/v1/decisions", summary="Decide one applicant of a vertical model")
async def decide(
    request: Request,
    institution: Annotated[str, Depends(dependencies.institution)],
    accept_language: Annotated[str | None, Header()] = None,
) -> Response:
    """The applicant's features at the bank and whom to ask the feature parties about; a
    party that does not give its routing (down, slow, unsigned, no data, no consent) refers
    the application with a reason naming it."""
    use: VerticalDecisions = request.app.state.decisions
    body = await use.one(await request.body(), institution, accept_language)
    return Response(body, media_type="application/json")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # As the horizontal app: what start-up built stays out of the collector's full scans.
    gc.collect()
    gc.freeze()
    yield
    await app.state.writer.close()
    await app.state.service.client.close()
    app.state.service.audit.close()


def create_vertical_app(service: VerticalService, *, max_body: int = 64 * 2**10) -> FastAPI:
    metrics = Metrics()
    writer = AuditWriter(service.audit, anchors=service.anchors)
    app = FastAPI(
        lifespan=_lifespan, title="jointcredit eligibility service (vertical model)",
        version=service.decider.policy.version, docs_url=None, redoc_url=None,
    )  # fmt: skip
    state = app.state
    state.service, state.metrics, state.writer = service, metrics, writer
    state.reads = ReadLimits()
    state.decisions = VerticalDecisions(service, writer, metrics)
    responses = Responses(service.audit)
    state.reviews = ReviewService(service.audit, writer, responses, state.reads)
    state.notices = NoticeService(service.audit, service.decider, responses, state.reads)
    app.add_middleware(BodyLimit, limit=max_body)
    errors.install(app)
    for r in (router, notices.router, reviews.router, ops.router):
        app.router.routes.extend(r.routes)
    return app
