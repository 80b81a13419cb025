"""The audit log's hash chain, with no knowledge of what its rows record.

Each row's hash covers its own fields and the previous row's hash, so editing a stored field,
deleting or reordering rows breaks a link. The chain hashes the payload's stored text (canonical
JSON), so checking a row never re-encodes it and an encoder change cannot break old rows.

`walk` checks every link and replays the rows through a callback that the layer writing them
supplies (`Derive`): what each row implies for the current-view rows (`decisions`), so that the
view can be checked against the chain without this module knowing any record's format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS = "0" * 64

# A current-view row's fields as the chain implies them (status, decision, final_decision,
# response, last_seq), by decision id.
View = dict[str, Any]
Derive = Callable[[str, str, dict[str, Any], int, Mapping[str, View]], Mapping[str, View]]
"""(kind, decision id, parsed payload, seq, views so far) -> the views this row sets. Raises
AuditError when the row cannot be applied (e.g. a review of a decision the log does not have)."""


class AuditError(RuntimeError):
    pass


def canonical(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text (orjson: the stdlib encoder is several times
    slower on a decision's payload)."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()


def chain_hash(prev: str, seq: int, kind: str, decision_id: str, institution: str,
               created_at: str, payload: str) -> str:  # fmt: skip
    """SHA-256 over the previous hash and the row's fields, each length-prefixed (so no two
    different rows share an encoding)."""
    h = hashlib.sha256()
    for part in (prev, str(seq), kind, decision_id, institution, created_at, payload):
        data = part.encode()
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Link:
    """A stored row's chained fields."""

    seq: int
    kind: str
    decision_id: str
    institution: str
    created_at: str
    payload: str
    prev_hash: str
    hash: str


def walk(rows: Iterable[Link], derive: Derive) -> tuple[int, str, dict[str, View]]:
    """Check every link in order; raise AuditError naming the first broken row. Returns the
    last row's number and hash and the current views the rows imply."""
    prev, expected_seq = GENESIS, 1
    views: dict[str, View] = {}
    for row in rows:
        if row.seq != expected_seq:
            raise AuditError(f"row {expected_seq} is missing (next row is {row.seq})")
        if row.prev_hash != prev:
            raise AuditError(f"row {row.seq}: previous-hash link broken")
        digest = chain_hash(
            prev, row.seq, row.kind, row.decision_id, row.institution, row.created_at,
            row.payload,
        )  # fmt: skip
        if digest != row.hash:
            raise AuditError(f"row {row.seq} ({row.kind} {row.decision_id}): edited")
        prev, expected_seq = row.hash, expected_seq + 1
        views.update(derive(row.kind, row.decision_id, json.loads(row.payload), row.seq, views))
    return expected_seq - 1, prev, views
