"""The review use case: a lender's queue of referred applications and a reviewer's final
decision on one (audited like a decision)."""

from __future__ import annotations

import asyncio
from typing import Any

from jointcredit.service import records
from jointcredit.service.audit import AuditLog
from jointcredit.service.chain import now
from jointcredit.service.errors import Conflict, NotFound
from jointcredit.service.limits import ReadLimits
from jointcredit.service.records import Responses
from jointcredit.service.schemas import ReviewIn
from jointcredit.service.writer import AuditWriter


class ReviewService:
    def __init__(
        self, audit: AuditLog, writer: AuditWriter, responses: Responses, reads: ReadLimits
    ) -> None:
        self.audit, self.writer, self.responses, self.reads = audit, writer, responses, reads

    async def queue(self, institution: str, limit: int, key_id: str) -> dict[str, Any]:
        """The institution's referred applications awaiting review, oldest first: read in a
        worker thread, an expensive read for the key's limits (its responses may come from
        several batch records)."""
        async with self.reads.expensive(key_id):
            return await asyncio.to_thread(self._queue, institution, limit)

    def _queue(self, institution: str, limit: int) -> dict[str, Any]:
        rows = self.audit.list_status(institution, "under_review", max(1, min(limit, 1000)))
        items = [
            {"decision_id": r.decision_id, "created_at": r.created_at,
             "response": self.responses.of(r)}
            for r in rows
        ]  # fmt: skip
        return {"items": items}

    async def resolve(self, decision_id: str, institution: str, review: ReviewIn) -> dict[str, Any]:
        row = self.audit.get(decision_id)
        if row is None or row.institution != institution:
            raise NotFound("no such decision")
        if row.status != "under_review":
            raise Conflict(f"decision {decision_id} is not awaiting review")
        at = now()
        # The check above is only a fast path: the store re-checks inside its write
        # transaction, where concurrent reviews of this referral are ordered.
        (seq,) = await self.writer.append([records.review_entry(row, review.model_dump(), at)])
        if seq is None:
            raise Conflict(f"decision {decision_id} is not awaiting review")
        return {"decision_id": decision_id, "status": "decided",
                "final_decision": review.final_decision, "decided_at": at}  # fmt: skip
