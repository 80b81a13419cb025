"""Decisions in the audit log: which view rows each kind of entry implies (the callback `audit
verify` replays the chain with) and how a decision's response is read back.

Entries: a `decision` holds one decision's response; a `batch` either one record per decision
(`decisions: [{"response": ...}, ...]`) or, with `format = "columns"`, one list per output
field (`DecisionTable.columns`) with the batch's tables; a `review` a reviewer's resolution of
one decision. A columnar decision's id is `<batch token>-<row>`, naming its record and row. A
columnar batch's decided applicants have no view row (they are final and read back from the
chained record); its referred ones have one (the review queue works on those rows) whose
response is left in the record (`IN_BATCH`): a view row or a full response per applicant
would be most of what such a batch costs to write (docs/SERVICE.md).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from jointcredit.service.audit import AuditLog, DecisionRow, Entry, ViewRow, as_view
from jointcredit.service.chain import AuditError, View, canonical
from jointcredit.service.decision import DecisionTable, status

# A `decisions` row's response when its columnar batch's chained record keeps it.
IN_BATCH = ""

# An entry that adds or revokes an applicant's consent (service/consent.py).
CONSENT = "consent"
# A feature party's audit of one signed routing query it answered (service/vertical_party.py).
VERTICAL_QUERY = "vertical-query"

BATCHES_KEPT = 8  # parsed columnar batch records kept in memory (a few MB each)

# A batch's institution, its parsed record, and its decisions (None: not a columnar batch).
_Parsed = tuple[str, dict[str, Any], DecisionTable | None]


def batch_id(token: str) -> str:
    return f"batch-{token}"


def decision_ids(token: str, n: int) -> list[str]:
    """`<batch token>-<row>`: a columnar decision's id names its batch record and row."""
    return [f"{token}-{k}" for k in range(n)]


def locate(decision_id: str) -> tuple[str, int] | None:
    """(batch id, row) of a columnar decision id; None for any other id."""
    token, _, row = decision_id.rpartition("-")
    if len(token) != 24 or not row.isdigit() or len(row) > 6:
        return None
    return batch_id(token), int(row)


def view_row(
    decision_id: str, institution: str, decision: str, at: str, response: str = IN_BATCH,
    review_requested: bool = False,
) -> ViewRow:  # fmt: skip
    """A new `decisions` row (`response`: the response's JSON text, or kept in the batch;
    `review_requested`: the applicant asked for a person to decide)."""
    state = status(decision, review_requested)
    return {
        "decision_id": decision_id, "institution": institution, "status": state,
        "decision": decision, "final_decision": None if state == "under_review" else decision,
        "created_at": at, "updated_at": at, "response": response,
    }  # fmt: skip


def decision_entry(
    institution: str, request: Mapping[str, Any], record: Mapping[str, Any], view: ViewRow,
    received: str, scored: str,
) -> Entry:  # fmt: skip
    """One decision: the digest of the validated request (canonical JSON), its features and
    context as sent, `record` (the response and any joint request) and the times."""
    payload = {
        "request_sha256": hashlib.sha256(canonical(request).encode()).hexdigest(),
        "features": request["applicant"], "context": request.get("context"), **record,
        "received_at": received, "scored_at": scored,
    }  # fmt: skip
    return Entry("decision", view["decision_id"], institution, payload, (view,))


def batch_entry(
    institution: str, token: str, body: bytes, features: Mapping[str, Sequence[Any]],
    context: Mapping[str, Sequence[Any]], records: list[dict[str, Any]],
    views: Sequence[ViewRow], received: str, scored: str,
) -> Entry:  # fmt: skip
    """A batch of rows: the digest of the body as received, the features and context as
    columns, one record per decision (its response and any joint request)."""
    payload = {
        "received_at": received, "scored_at": scored,
        "request_sha256": hashlib.sha256(body).hexdigest(), "features": features,
        "context": context, "decisions": records,
    }  # fmt: skip
    return Entry("batch", batch_id(token), institution, payload, tuple(views))


def columnar_entry(
    institution: str, token: str, body: bytes, table: DecisionTable, decisions: dict[str, Any],
    request: Mapping[str, Any], model: Mapping[str, Any], policy_version: str, received: str,
    scored: str,
) -> Entry:  # fmt: skip
    """A columnar batch: the digest of the body as received, `request` (its `features`,
    `context` and `stance` columns), the output columns and the batch's tables; a view row
    for each referred decision only."""
    payload = {
        "format": "columns", "request_sha256": hashlib.sha256(body).hexdigest(),
        "received_at": received, "scored_at": scored, **request, "model": model,
        "policy_version": policy_version, "decisions": decisions, **tables(table),
    }  # fmt: skip
    views = [
        view_row(decision_id, institution, outcome, scored,
                 review_requested=table.requested_review(k))
        for k, (decision_id, outcome) in enumerate(
            zip(decisions["decision_id"], table.decision, strict=True))
        if decisions["status"][k] == "under_review"
    ]  # fmt: skip
    return Entry("batch", batch_id(token), institution, payload, tuple(views))


def tables(table: DecisionTable) -> dict[str, Any]:
    """The tables a columnar batch's ids point into, and the language of their texts."""
    return {"rules": table.rules, "reason_table": table.reason_table,
            "contribution_features": table.features, "language": table.language}  # fmt: skip


def review_entry(row: DecisionRow, review: dict[str, Any], at: str) -> Entry:
    """A reviewer's resolution of a referred decision: the view row updated with it."""
    row.status, row.final_decision, row.updated_at = "decided", review["final_decision"], at
    return Entry("review", row.decision_id, row.institution, review, (as_view(row),))


def _made(response: Mapping[str, Any], seq: int) -> View:
    decision = response["decision"]
    return {
        "status": response["status"],
        "decision": decision,
        "final_decision": None if response["status"] == "under_review" else decision,
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
            did: {**_made({"status": cols["status"][k], "decision": cols["decision"][k]}, seq),
                  "response": IN_BATCH}
            for k, did in enumerate(cols["decision_id"])
            if cols["status"][k] == "under_review"
        }  # fmt: skip
    if kind in (CONSENT, VERTICAL_QUERY):
        return {}  # the consent registry's own table, a platform's query: not decisions
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
    chained record (the last few parsed records kept in memory, by batch id, so that a hit
    needs no database read: the review queue and progress queries tend to read several
    decisions of one batch). Called from worker threads: a miss parses megabytes of JSON,
    which must not run on the event loop (service/limits.py limits how often)."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._batches: OrderedDict[str, _Parsed] = OrderedDict()  # by batch id, LRU
        self._lock = threading.Lock()

    def holds(self, decision_id: str) -> bool:
        """Whether reading this decision back is cheap: not a columnar id, or its batch's
        record is in memory."""
        where = locate(decision_id)
        if where is None:
            return True
        with self._lock:
            return where[0] in self._batches

    def in_batch(self, decision_id: str) -> tuple[str, dict[str, Any]] | None:
        """(institution, response) of a decision made in a columnar batch; None when the id
        is not one."""
        where = locate(decision_id)
        cached = None if where is None else self._batch(where[0])
        if where is None or cached is None:
            return None
        k = where[1]
        institution, payload, table = cached
        if table is None or k >= len(table):
            return None
        columns = payload["decisions"]
        response = table.render(
            k, decision_id=columns["decision_id"][k], reference=columns["reference"][k],
            model=payload["model"], policy_version=payload["policy_version"],
            created_at=payload["scored_at"],
        )  # fmt: skip
        return institution, response

    def _batch(self, batch: str) -> _Parsed | None:
        with self._lock:
            cached = self._batches.get(batch)
            if cached is not None:
                self._batches.move_to_end(batch)
        if cached is None:
            found = self.log.entry("batch", batch)
            if found is None:
                return None
            _, institution, text = found
            payload = json.loads(text)
            table = None
            if payload.get("format") == "columns":
                table = DecisionTable.from_record(payload)
            cached = (institution, payload, table)
            with self._lock:
                self._batches[batch] = cached
                while len(self._batches) > BATCHES_KEPT:
                    self._batches.popitem(last=False)
        return cached

    def columnar_features(self, decision_id: str) -> dict[str, Any] | None:
        """The features a columnar batch's decision was made on, as audited (None: the id
        is not one)."""
        where = locate(decision_id)
        cached = None if where is None else self._batch(where[0])
        if where is None or cached is None or cached[2] is None:
            return None
        features = cached[1]["features"]
        return {f: values[where[1]] for f, values in features.items()}

    def of(self, row: DecisionRow) -> dict[str, Any]:
        """A view row's response, from the row or from its batch's chained record."""
        if row.response != IN_BATCH:
            return dict(json.loads(row.response))
        found = self.in_batch(row.decision_id)
        if found is None:
            raise AuditError(f"decision {row.decision_id}: its batch record is missing")
        return found[1]
