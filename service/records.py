"""Decisions in the audit log: which view rows each kind of entry implies (the callback `audit
verify` replays the chain with) and how a decision's response is read back.

Entries: a `decision` holds one decision's response; a `batch` either one record per decision
(`decisions: [{"response": ...}, ...]`) or, with `format = "columns"`, one list per output
field (service/columns.py); a `review` a reviewer's resolution of one decision. A columnar
batch's decided applicants have no view row (they are final and read back from the chained
record); its referred ones have one whose response is left in the record (`IN_BATCH`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jointcredit.service.audit import AuditLog, DecisionRow
from jointcredit.service.chain import AuditError, View
from jointcredit.service.columns import locate, row_response

# A `decisions` row's response when its columnar batch's chained record keeps it.
IN_BATCH = ""

BATCHES_KEPT = 8  # parsed columnar batch records kept in memory (a few MB each)


def _made(response: Mapping[str, Any], seq: int) -> View:
    decision = response["decision"]
    return {
        "status": response["status"],
        "decision": decision,
        "final_decision": None if decision == "refer" else decision,
        "response": response,
        "last_seq": seq,
    }


def derive_views(
    kind: str, decision_id: str, payload: dict[str, Any], seq: int, views: Mapping[str, View]
) -> dict[str, View]:
    """The `decisions` rows an entry sets, as `AuditLog.verify` expects them."""
    if kind == "batch" and payload.get("format") == "columns":
        cols = payload["decisions"]
        return {
            did: {**_made({"status": cols["status"][k], "decision": "refer"}, seq),
                  "response": IN_BATCH}
            for k, did in enumerate(cols["decision_id"])
            if cols["decision"][k] == "refer"
        }  # fmt: skip
    if kind == "batch":
        return {
            r["response"]["decision_id"]: _made(r["response"], seq) for r in payload["decisions"]
        }
    if kind == "decision":
        return {decision_id: _made(payload["response"], seq)}
    state = views.get(decision_id)
    if state is None:
        raise AuditError(f"row {seq}: a review of a decision the log does not have")
    return {
        decision_id: {
            **state, "status": "decided", "final_decision": payload["final_decision"],
            "last_seq": seq,
        }
    }  # fmt: skip


class Responses:
    """Reads decisions' responses back: from their view row, or from their columnar batch's
    chained record (the last few parsed records kept in memory: the review queue and progress
    queries tend to read several decisions of one batch)."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._batches: dict[int, dict[str, Any]] = {}  # parsed records by seq

    def in_batch(self, decision_id: str) -> tuple[str, dict[str, Any]] | None:
        """(institution, response) of a decision made in a columnar batch; None when the id
        is not one."""
        where = locate(decision_id)
        if where is None:
            return None
        batch, k = where
        found = self.log.entry("batch", batch)
        if found is None:
            return None
        seq, institution, text = found
        payload = self._batches.get(seq)
        if payload is None:
            payload = json.loads(text)
            self._batches[seq] = payload
            while len(self._batches) > BATCHES_KEPT:
                self._batches.pop(next(iter(self._batches)))
        if payload.get("format") != "columns" or k >= len(payload["decisions"]["decision_id"]):
            return None
        return institution, row_response(payload, k)

    def of(self, row: DecisionRow) -> dict[str, Any]:
        """A view row's response, from the row or from its batch's chained record."""
        if row.response != IN_BATCH:
            return dict(json.loads(row.response))
        found = self.in_batch(row.decision_id)
        if found is None:
            raise AuditError(f"decision {row.decision_id}: its batch record is missing")
        return found[1]
