"""Reading a decision back: where it stands (received, scored, under review, decided) and its
response as it was answered, from the audit log's view rows or a columnar batch's record.
The horizontal and the vertical service alike (`GET /v1/decisions/{id}`)."""

from __future__ import annotations

import asyncio

from jointcredit.service.audit import AuditLog, DecisionRow
from jointcredit.service.decision import Json
from jointcredit.service.errors import NotFound
from jointcredit.service.limits import ReadLimits
from jointcredit.service.records import Responses


class Progress:
    def __init__(self, audit: AuditLog, responses: Responses, reads: ReadLimits) -> None:
        self.audit, self.responses, self.reads = audit, responses, reads

    async def of(self, decision_id: str, institution: str, key_id: str) -> Json:
        """Where a decision stands: received, scored, under review, decided. Read in a worker
        thread; a read that must parse a batch record counts against the key's limits."""
        if self.responses.holds(decision_id):
            return await asyncio.to_thread(self._progress, decision_id, institution)
        async with self.reads.expensive(key_id):
            return await asyncio.to_thread(self._progress, decision_id, institution)

    def _progress(self, decision_id: str, institution: str) -> Json:
        row = self.audit.get(decision_id)
        if row is None:
            found = self.responses.in_batch(decision_id)  # columnar, decided at once
            if found is None or found[0] != institution:
                raise NotFound("no such decision")  # never confirm another's id
            response = found[1]
            row = DecisionRow(
                status=response["status"], decision=response["decision"],
                final_decision=response["decision"], updated_at=response["created_at"],
            )  # fmt: skip
        elif row.institution != institution:
            raise NotFound("no such decision")
        else:
            response = self.responses.of(row)
        at = response["created_at"]
        stages = [{"stage": "received", "at": at}, {"stage": "scored", "at": at}]
        if response["status"] == "under_review" or response["decision"] == "refer":
            stages.append({"stage": "under_review", "at": at})
        if row.status == "decided":
            stages.append({"stage": "decided", "at": row.updated_at})
        return {
            "decision_id": decision_id, "status": row.status, "decision": row.decision,
            "final_decision": row.final_decision, "progress": stages, "response": response,
        }  # fmt: skip
