"""The columnar batch format (`POST /v1/decisions:columnar`): applicants as one list per
feature, decisions as one list per output field.

Bulk scoring of a portfolio is what batches are for, and a column per field is how model
servers take bulk input (KServe's Open Inference Protocol, TensorFlow Serving's columnar
`inputs`): the body is under a third of the rows format's size (98 vs 317 kB for 1,000
applicants), pydantic validates a list of floats far faster than a list of objects (~1 vs ~11
us per applicant, measured), and the decider works on columns anyway. Validation is as strict
as for single decisions: every feature column present, every value typed and in range, every
column the same length; a 422 names the column and the row (`columns.<feature>.<row>`).

Reasons, flags and unevaluated rules travel as ids into the batch's tables (`rules`,
`reason_table`) with every feature's contribution as one matrix: per applicant a few small
integers instead of a few objects (248 vs 832 kB of response for 1,000 shipped applicants);
`?expand=true` adds them in full.

Every decision is audited: the batch's chain record holds the request's digest, the feature and
context columns, every output column and the tables. A decision's id is `<batch token>-<row>`;
referred decisions also get their `decisions` view row at once (the review queue and reviews
work on those) with the response left in the chained record (`IN_BATCH`), the others are final
and have no view row. `row_response` rebuilds any of them in the `DecisionOut` shape single
decisions have. A view row per applicant cost ~10-16 us of SQLite work each on this machine,
most of a 50,000/s budget; `audit verify` re-derives the referred rows' views from the chained
columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the audit log reads responses back without loading the model code
    from jointcredit.service.decide import DecisionTable


def decision_ids(token: str, n: int) -> list[str]:
    """`<batch token>-<row>`: a columnar decision's id names its batch record and row."""
    return [f"{token}-{k}" for k in range(n)]


def batch_id(token: str) -> str:
    return f"batch-{token}"


def locate(decision_id: str) -> tuple[str, int] | None:
    """(batch id, row) of a columnar decision id; None for any other id."""
    token, _, row = decision_id.rpartition("-")
    if len(token) != 24 or not row.isdigit() or len(row) > 6:
        return None
    return batch_id(token), int(row)


def reason_objects(
    ids: Sequence[int],
    table: Sequence[Mapping[str, Any]],
    contributions: Sequence[float | None],
    features: Sequence[str],
) -> list[dict[str, Any]]:
    """Reasons given as ids into a batch's reason table, in `DecisionOut`'s form: each table
    entry with its contribution (a model reason's from the applicant's row of contributions,
    in `features`' order; None for a policy reason)."""
    out = []
    for i in ids:
        entry = table[i]
        feature = entry["feature"]
        value = None if entry["kind"] != "model" else contributions[features.index(feature)]
        out.append({**entry, "contribution": None if value is None else float(value)})
    return out


def output_columns(
    ids: list[str], table: DecisionTable, references: list[str | None]
) -> dict[str, Any]:
    """A batch's decisions as columns (the response body's `decisions`; `contributions` stays
    a numpy matrix, which orjson writes without a Python float per value)."""
    return {
        "decision_id": ids,
        "status": ["under_review" if d == "refer" else "decided" for d in table.decision],
        "decision": table.decision,
        "probability_of_default": [round(p, 6) for p in table.probability_of_default],
        "score": table.score,
        "policy_score": table.policy_score,
        "stance": table.stance,
        "reason_ids": table.reason_ids,
        "contributions": table.contributions,
        "flag_ids": table.flag_ids,
        "not_evaluated_ids": table.not_evaluated_ids,
        "unseen_values": table.unknown_values,
        "reference": references,
    }


def row_response(record: Mapping[str, Any], k: int) -> dict[str, Any]:
    """Decision `k` of a columnar batch as a single decision's response (`DecisionOut`), from
    the batch's record: `decisions` (the output columns), `reason_table`,
    `contribution_features`, `rules`, `model`, `policy_version`, `scored_at`. Records written
    before reasons, flags and unevaluated rules were ids carry them in full instead."""
    columns = record["decisions"]
    if "reason_ids" in columns:
        rules = record["rules"]
        reasons = reason_objects(
            columns["reason_ids"][k], record["reason_table"], columns["contributions"][k],
            record["contribution_features"],
        )  # fmt: skip
        flags = [rules[i] for i in columns["flag_ids"][k]]
        not_evaluated = [rules[i]["code"] for i in columns["not_evaluated_ids"][k]]
    else:
        reasons = columns["reasons"][k]
        flags = columns["policy_flags"][k]
        not_evaluated = columns["rules_not_evaluated"][k]
    return {
        "decision_id": columns["decision_id"][k],
        "status": columns["status"][k],
        "decision": columns["decision"][k],
        "probability_of_default": float(columns["probability_of_default"][k]),
        "score": columns["score"][k],
        "policy_score": columns["policy_score"][k],
        "stance": columns["stance"][k],
        "reasons": reasons,
        "policy_flags": flags,
        "rules_not_evaluated": not_evaluated,
        "unseen_values": columns["unseen_values"][k],
        "model": record["model"],
        "policy_version": record["policy_version"],
        "reference": columns["reference"][k],
        "joint_credit": None,
        "created_at": record["scored_at"],
    }
