"""The vertical service's decision use case (service/vertical_service.py builds it): for one
applicant or a batch of rows, each applicant's routing from every feature party (one signed
query per distinct applicant per party, service/vertical_client.py; at most
`ROUTING_AT_ONCE` applicants at a time across the service, its workers sharing the bound),
its joint limit (service/joint_limits.py, the horizontal service's step), the decision
(service/vertical_decide.py), audited in one chained entry before it is answered, as the
horizontal service records a decision or a batch of rows (service/records.py), so reviews and
notices read them alike.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from jointcredit.service import dependencies, records
from jointcredit.service.audit import ViewRow
from jointcredit.service.chain import now
from jointcredit.service.consent import ConsentRegistry
from jointcredit.service.decision import DecisionTable, Json
from jointcredit.service.decisions import _accepted
from jointcredit.service.errors import parse
from jointcredit.service.fields import text
from jointcredit.service.joint import JointRequest
from jointcredit.service.joint_limits import Exposure, JointLimits
from jointcredit.service.languages import Language
from jointcredit.service.limits import Gate
from jointcredit.service.metrics import Metrics
from jointcredit.service.monitoring import Monitor
from jointcredit.service.openapi import responses
from jointcredit.service.policy import Stance
from jointcredit.service.routers.decisions import request_body
from jointcredit.service.schemas import (
    HUMAN_REVIEW,
    BatchOut,
    DecisionOut,
    applicant_model,
    category_text,
    context_model,
)
from jointcredit.service.vertical_client import Routing
from jointcredit.service.writer import AuditWriter

if TYPE_CHECKING:
    from jointcredit.data.schema import Schema
    from jointcredit.service.vertical_decide import VerticalDecider
    from jointcredit.service.vertical_service import VerticalService

# A batch asks each party once per applicant: a party's endpoint chains each query in its own
# audit log, so a batch is bounded well below the horizontal service's 10,000, and so are the
# queries in flight.
MAX_VERTICAL_BATCH = 1000
ROUTING_AT_ONCE = 16
# The generated request bodies' names in the OpenAPI schema.
V_SINGLE, V_BATCH = "VerticalDecisionRequest", "VerticalBatchRequest"


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


def request_models(
    schema: Schema, decider: VerticalDecider
) -> tuple[type[BaseModel], type[BaseModel]]:
    """(one applicant's request, a batch's) for this model and policy."""
    language: Any = (Language | None, Field(None, description="en or zh"))
    fields: dict[str, Any] = {
        "applicant": (applicant_model(schema), Field(..., description="the bank's features")),
        "vertical": (VerticalRef, Field(..., description="whom to ask the feature parties about")),
        "context": (context_model(decider.policy) | None, Field(None)),
        "stance": (Stance | None, Field(None, description="default: the policy's")),
        "reference": (text(128) | None, Field(None, description="your own reference")),
        "human_review_requested": HUMAN_REVIEW,
        "joint": (
            JointRequest | None,
            Field(None, description="ask for a joint credit limit across participating lenders"),
        ),
    }
    config = ConfigDict(extra="forbid", frozen=True)
    single = create_model(V_SINGLE, __config__=config, **fields, language=language)
    item = create_model("VerticalBatchApplication", __config__=config, **fields)
    batch = create_model(
        V_BATCH,
        __config__=config,
        applications=(list[item], Field(..., min_length=1, max_length=MAX_VERTICAL_BATCH)),  # type: ignore[valid-type]
        language=language,
    )
    return single, batch


class VerticalDecisions:
    def __init__(
        self, service: VerticalService, writer: AuditWriter, metrics: Metrics,
        monitor: Monitor | None = None,
    ) -> None:  # fmt: skip
        self.service, self.writer, self.metrics = service, writer, metrics
        self.monitor = monitor  # stability monitoring's window (None: no reference)
        self.model_info = service.model_info.model_dump(mode="json")
        policy = service.decider.policy
        self.joint = JointLimits(service.exposure, ConsentRegistry(service.audit), policy)
        # Across the service, singles and batches alike: concurrent batches cannot multiply
        # the queries each feature party answers (and audits).
        self._routing_at_once = Gate(max(1, ROUTING_AT_ONCE // service.workers))

    async def one(self, raw: bytes, institution: str, accept: str | None = None) -> bytes:
        start = time.perf_counter()
        item = parse(raw, self.service.request)
        language = item.language or _accepted(accept)
        self.joint.check([item.joint])
        routing = await self._routing(item.vertical.applicant_id, item.vertical.consent_id)
        exposure = await self._exposures([item], [routing], institution)
        received = now()
        request = item.model_dump(mode="json")
        decided = self._decide(item, request, routing, exposure[0], language)
        scored = now()
        out, record, view = self._answer(item, routing, *decided, institution, scored)
        entry = records.decision_entry(institution, request, record, view, received, scored)
        await self.writer.append([entry])
        self.metrics.decided([view["decision"]])
        self._monitored([decided[0]], [request])
        self.metrics.latency_one.observe(time.perf_counter() - start)
        return out

    async def rows(self, raw: bytes, institution: str, accept: str | None = None) -> bytes:
        """A batch of rows -> {"decisions": [...]}, in request order, audited as one entry."""
        start = time.perf_counter()
        body = parse(raw, self.service.batch_request)
        language = body.language or _accepted(accept)
        items = list(body.applications)
        self.joint.check([i.joint for i in items])
        # Each feature party is asked once per distinct applicant and consent of the batch.
        keys = [(i.vertical.applicant_id, i.vertical.consent_id) for i in items]
        distinct = list(dict.fromkeys(keys))
        asked = await asyncio.gather(*(self._routing(*key) for key in distinct))
        by_key = dict(zip(distinct, asked, strict=True))
        routings = [by_key[key] for key in keys]
        exposures = await self._exposures(items, routings, institution)
        received = now()
        requests = [i.model_dump(mode="json") for i in items]
        decided = [
            self._decide(item, request, routing, exposure, language)
            for item, request, routing, exposure in zip(
                items, requests, routings, exposures, strict=True
            )
        ]
        scored = now()
        outs, recs, views = [], [], []
        for item, routing, (table, limit, kept) in zip(items, routings, decided, strict=True):
            out, record, view = self._answer(item, routing, table, limit, kept, institution, scored)
            outs.append(out)
            recs.append(record)
            views.append(view)
        features = {f: [r["applicant"][f] for r in requests] for f in requests[0]["applicant"]}
        context = {
            c: [(r["context"] or {}).get(c) for r in requests]
            for c in self.service.decider.policy.context
        }
        token = os.urandom(12).hex()
        entry = records.batch_entry(
            institution, token, raw, features, context, recs, views, received, scored
        )
        await self.writer.append([entry])
        self.metrics.decided([v["decision"] for v in views])
        self._monitored([d[0] for d in decided], requests)
        self.metrics.latency_batch.observe(time.perf_counter() - start)
        return b'{"decisions":[' + b",".join(outs) + b"]}"

    def _monitored(self, tables: list[DecisionTable], requests: list[dict[str, Any]]) -> None:
        """The scored applicants join the stability window: a referral for want of a party's
        answer has no score, and is not one of the population the model scores."""
        if self.monitor is None:
            return
        for table, request in zip(tables, requests, strict=True):
            if table.score[0] is not None:
                applicant = {k: category_text(v) for k, v in request["applicant"].items()}
                self.monitor.add_one(int(table.score[0]), applicant)

    async def _routing(self, applicant_id: str, consent_id: str | None) -> Routing:
        async with self._routing_at_once():
            return await self.service.client.routing(applicant_id, consent_id)

    async def _exposures(
        self, items: list[Any], routings: list[Routing], institution: str
    ) -> list[Exposure]:
        # The other lenders are asked about an applicant only once it can be scored.
        asking = [i.joint if r.complete else None for i, r in zip(items, routings, strict=True)]
        return await self.joint.exposures(asking, institution)

    def _decide(
        self, item: Any, request: dict[str, Any], routing: Routing, exposure: Exposure,
        language: Language | None,
    ) -> tuple[DecisionTable, Json | None, dict[str, Any]]:  # fmt: skip
        """One applicant's decision, its joint limit and what the audit record keeps of it."""
        decider = self.service.decider
        if routing.complete:
            applicant = {k: category_text(v) for k, v in request["applicant"].items()}
            table = decider.decide_one(
                applicant, request["context"] or {}, item.stance, language, routing.sides
            )
        else:
            table = decider.unscored(item.stance, language, routing.problems)
        if item.human_review_requested:
            table.human_review = [True]
        limit, kept = self.joint.answer(table, 0, item.joint, exposure)
        return table, limit, kept

    def _answer(
        self, item: Any, routing: Routing, table: DecisionTable, limit: Json | None,
        kept: dict[str, Any], institution: str, scored: str,
    ) -> tuple[bytes, dict[str, Any], ViewRow]:  # fmt: skip
        """One decision's response (JSON), audit record and view row."""
        decision_id = os.urandom(16).hex()
        response = table.render(
            0, decision_id=decision_id, reference=item.reference, model=self.model_info,
            policy_version=self.service.decider.policy.version, created_at=scored, joint=limit,
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
        return out, record, view


router = APIRouter(tags=["decisions"])
Caller = Annotated[str, Depends(dependencies.institution)]
DECIDE = responses(401, 413, 422, 503)


@router.post(
    "/v1/decisions", response_model=DecisionOut, responses=DECIDE,
    openapi_extra=request_body(V_SINGLE), summary="Decide one applicant of a vertical model",
    response_description="the decision, written to the audit log before it is answered",
)  # fmt: skip
async def decide(
    request: Request, institution: Caller, accept_language: Annotated[str | None, Header()] = None
) -> Response:
    """The applicant's features at the bank and whom to ask the feature parties about; a
    party that does not give its routing (down, slow, unsigned, no data, no consent) refers
    the application with a reason naming it. `joint` asks for a credit limit shared with the
    other lenders."""
    use: VerticalDecisions = request.app.state.decisions
    body = await use.one(await request.body(), institution, accept_language)
    return Response(body, media_type="application/json")


@router.post(
    "/v1/decisions:batch", response_model=BatchOut, responses=DECIDE,
    openapi_extra=request_body(V_BATCH),
    summary="Decide a batch of applicants of a vertical model",
    response_description="one decision per application, in request order",
)  # fmt: skip
async def decide_batch(
    request: Request, institution: Caller, accept_language: Annotated[str | None, Header()] = None
) -> Response:
    """Up to 1,000 applications, each as for a single decision, in request order, audited as
    one entry; each party is asked once per applicant, a bounded number at a time."""
    use: VerticalDecisions = request.app.state.decisions
    body = await use.rows(await request.body(), institution, accept_language)
    return Response(body, media_type="application/json")
