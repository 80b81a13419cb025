"""The decision use case: validate the request, score it and apply the policy (`Decider`),
add any joint limit (service/joint_limits.py), audit the decision (answered only once its
entry is committed), render the response. One applicant, a batch of rows, a batch of columns;
reading a decision back: service/progress.py.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from jointcredit.service import records
from jointcredit.service.audit import Entry, ViewRow
from jointcredit.service.chain import now
from jointcredit.service.consent import ConsentRegistry
from jointcredit.service.decision import DecisionTable
from jointcredit.service.errors import Invalid, parse
from jointcredit.service.examples import example_decision
from jointcredit.service.joint_limits import Exposure, JointLimits
from jointcredit.service.languages import Language, LanguageError, negotiate
from jointcredit.service.loader import Service
from jointcredit.service.metrics import Metrics
from jointcredit.service.monitoring import Monitor
from jointcredit.service.schemas import category_text, columnar_model, request_models
from jointcredit.service.writer import AuditWriter


def _accepted(header: str | None) -> Language | None:
    """The language an Accept-Language header asks for (None: it asks for none); a 422 when
    it accepts none the service has."""
    try:
        return negotiate(header)
    except LanguageError as exc:
        raise Invalid("Accept-Language", str(exc)) from None


class DecisionService:
    def __init__(
        self, service: Service, writer: AuditWriter, metrics: Metrics,
        monitor: Monitor | None = None,
    ) -> None:  # fmt: skip
        self.monitor = monitor  # stability monitoring's window (None: no reference)
        self.decider = service.decider
        self.policy = service.decider.policy
        self.consents = ConsentRegistry(service.audit)
        self.joint = JointLimits(service.exposure, self.consents, self.policy)
        self.writer, self.metrics = writer, metrics
        self.model_info = service.model_info.model_dump(mode="json")
        schema = self.decider.model.card.data_schema
        self.single, self.batch = request_models(schema, self.policy, service.example)
        self.columnar = columnar_model(schema, self.policy, service.example)
        # The OpenAPI page's response example: this model's and policy's real answer.
        self.example = example_decision(
            self.decider, self.single, service.example, self.model_info, now()
        )
        self.categorical = [f for f, s in schema.features.items() if s.type == "categorical"]

    async def one(self, raw: bytes, institution: str, accept: str | None = None) -> bytes:
        """One applicant -> its decision's JSON (`accept`: the Accept-Language header)."""
        start = time.perf_counter()
        item = parse(raw, self.single)
        language = item.language or _accepted(accept)
        exposure: list[Exposure] = [None]
        if item.joint is not None:
            exposure = await self._exposures([item], institution)
        received = now()
        request = item.model_dump(mode="json")  # JSON types: what is audited and digested
        applicant = {k: category_text(v) for k, v in request["applicant"].items()}
        table = self.decider.decide_one(applicant, request["context"] or {}, item.stance, language)
        if item.human_review_requested:
            table.human_review = [True]
        scored = now()
        outs, recs, views = self._answer(table, [item], exposure, institution, scored)
        entry = records.decision_entry(institution, request, recs[0], views[0], received, scored)
        await self._audit(entry, table)
        if self.monitor is not None:
            self.monitor.add_one(table.score[0], applicant)
        self.metrics.latency_one.observe(time.perf_counter() - start)
        return outs[0]

    async def rows(self, raw: bytes, institution: str, accept: str | None = None) -> bytes:
        """A batch of rows -> {"decisions": [...]}, decided column by column, audited as one
        entry."""
        start = time.perf_counter()
        body = parse(raw, self.batch)
        language = body.language or _accepted(accept)
        items = list(body.applications)
        exposure = await self._exposures(items, institution)
        received = now()
        features, context = self._columns(items)
        table = self.decider.decide_columns(features, context, [i.stance for i in items], language)
        if any(i.human_review_requested for i in items):
            table.human_review = [i.human_review_requested for i in items]
        scored = now()
        outs, recs, views = self._answer(table, items, exposure, institution, scored)
        token = os.urandom(12).hex()
        entry = records.batch_entry(
            institution, token, raw, features, context, recs, views, received, scored
        )
        await self._audit(entry, table)
        if self.monitor is not None:
            self.monitor.add(table.score, features)
        self.metrics.latency_batch.observe(time.perf_counter() - start)
        return b'{"decisions":[' + b",".join(outs) + b"]}"

    async def columns(
        self, raw: bytes, institution: str, expand: bool, accept: str | None = None
    ) -> bytes:
        """A batch of columns -> one list per output field (no joint limits: each needs a
        secure sum across the lenders). `expand`: each applicant's reasons, flags and
        unevaluated rules in full too."""
        start = time.perf_counter()
        body = parse(raw, self.columnar)
        language = body.language or _accepted(accept)
        received = now()
        n = len(next(iter(body.columns.__dict__.values())))
        features = dict(body.columns.__dict__)
        for f in self.categorical:  # category_text, inline: up to 10,000 values a column
            features[f] = [str(v) if type(v) is int else v for v in features[f]]
        given = {} if body.context is None else body.context.__dict__
        context = {c: given.get(c) or [None] * n for c in self.policy.context}
        table = self.decider.decide_columns(features, context, body.stance or [None] * n, language)
        if body.human_review_requested is not None and any(body.human_review_requested):
            table.human_review = list(body.human_review_requested)
        scored = now()
        token = os.urandom(12).hex()
        out = table.columns(records.decision_ids(token, n), body.reference or [None] * n)
        request = {"features": features, "context": context, "stance": body.stance}
        entry = records.columnar_entry(
            institution, token, raw, table, out, request, self.model_info, self.policy.version,
            received, scored,
        )  # fmt: skip
        await self._audit(entry, table)
        if self.monitor is not None:
            self.monitor.add(table.score, features)
        self.metrics.latency_batch.observe(time.perf_counter() - start)
        if expand:
            out["reasons"] = [table.reasons(k) for k in range(n)]
            out["policy_flags"] = [table.policy_flags(k) for k in range(n)]
            out["rules_not_evaluated"] = [table.rules_not_evaluated(k) for k in range(n)]
        answer = {"count": n, "decisions": out, **records.tables(table), "model": self.model_info,
                  "policy_version": self.policy.version, "created_at": scored}  # fmt: skip
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)

    def _columns(self, items: list[Any]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """A batch's validated features and context signals, column by column."""
        applicants = [i.applicant.__dict__ for i in items]  # pydantic keeps fields there
        features = {f: [a[f] for a in applicants] for f in self.decider.features}
        for f in self.categorical:
            features[f] = [category_text(v) for v in features[f]]
        contexts = [i.context for i in items]
        context = {
            c: [None if x is None else x.__dict__[c] for x in contexts] for c in self.policy.context
        }
        return features, context

    async def _exposures(self, items: list[Any], institution: str) -> list[Exposure]:
        return await self.joint.exposures([item.joint for item in items], institution)

    def _answer(
        self, table: DecisionTable, items: list[Any], exposure: list[Exposure],
        institution: str, scored: str,
    ) -> tuple[list[bytes], list[dict[str, Any]], list[ViewRow]]:  # fmt: skip
        """Each applicant's response (JSON), audit record and view row, joint limits added."""
        ids = os.urandom(16 * len(items)).hex()  # one system call, not one per decision
        outs: list[bytes] = []
        recs: list[dict[str, Any]] = []
        views: list[ViewRow] = []
        for k, (item, ex) in enumerate(zip(items, exposure, strict=True)):
            joint, kept = self.joint.answer(table, k, item.joint, ex)
            decision_id = ids[32 * k : 32 * k + 32]
            response = table.render(
                k, decision_id=decision_id, reference=item.reference, model=self.model_info,
                policy_version=self.policy.version, created_at=scored, joint=joint,
            )  # fmt: skip
            text = orjson.dumps(response)
            record: dict[str, Any] = {"response": response, **kept}
            if table.requested_review(k):
                record["human_review"] = "requested by the applicant"
            recs.append(record)
            views.append(
                records.view_row(decision_id, institution, table.decision[k], scored,
                                 text.decode(), table.requested_review(k))
            )  # fmt: skip
            outs.append(text)
        return outs, recs, views

    async def _audit(self, entry: Entry, table: DecisionTable) -> None:
        await self.writer.append([entry])
        self.metrics.decided(table.decision)
