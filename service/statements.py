"""The audit log's append statements, compiled once per database dialect by SQLAlchemy and run
through the driver's cursor.

Appends are on the service's request path: SQLAlchemy's execution path (building, compiling
and binding a statement per call) cost more CPU per transaction and per row than SQLite's own
work, so the statements are compiled once at start-up and only their parameters are bound per
append.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, literal_column, select, update

from jointcredit.service.tables import AuditRow, ChainHead, ConsentRow, DecisionRow


@dataclass(frozen=True)
class Compiled:
    """A statement compiled for one dialect: its SQL text and how to order its parameters."""

    sql: str
    positions: tuple[str, ...] | None  # positional paramstyles (qmark, format); None: named
    renames: tuple[tuple[str, str], ...] = ()  # (parameter, the column value it takes)

    @classmethod
    def of(cls, statement: Any, dialect: Any, **renames: str) -> Compiled:
        compiled = statement.compile(dialect=dialect)
        positions = tuple(compiled.positiontup) if compiled.positional else None
        return cls(str(compiled), positions, tuple(renames.items()))

    def params(self, values: dict[str, Any]) -> Any:
        if self.renames:
            values = {**values, **{new: values[old] for new, old in self.renames}}
        if self.positions is None:
            return values
        return tuple(values[name] for name in self.positions)


class Statements:
    def __init__(self, dialect: Any) -> None:
        view_columns = [c.name for c in DecisionRow.__table__.columns if c.name != "decision_id"]
        head = select(ChainHead.seq, ChainHead.hash).where(ChainHead.id == literal_column("1"))
        # Read inside the write transaction and locked: another process may append meanwhile.
        self.head = Compiled(str(head.with_for_update().compile(dialect=dialect)), None)
        self.log = Compiled.of(insert(AuditRow), dialect)
        self.view = Compiled.of(insert(DecisionRow), dialect)
        self.insert_head = Compiled.of(insert(ChainHead), dialect)
        # Renamed parameters: SQLAlchemy reserves a column's own name in a SET clause.
        self.update_view = Compiled.of(
            update(DecisionRow)
            .where(DecisionRow.decision_id == bindparam("decision_id_"))
            .values({c: bindparam(c) for c in view_columns}),
            dialect,
            decision_id_="decision_id",
        )
        # A review's precondition, read inside the write transaction (after the head lock):
        # only then can two reviews of one referral not both see "under_review".
        self.status = Compiled.of(
            select(DecisionRow.status).where(DecisionRow.decision_id == bindparam("id_")),
            dialect,
            id_="decision_id",
        )
        # A consent's precondition, read inside the write transaction like a review's.
        self.consent = Compiled.of(
            select(ConsentRow.revoked_at).where(
                ConsentRow.institution == bindparam("institution_"),
                ConsentRow.consent_id == bindparam("consent_id_"),
            ),
            dialect,
            institution_="institution",
            consent_id_="consent_id",
        )
        self.add_consent = Compiled.of(insert(ConsentRow), dialect)
        self.revoke_consent = Compiled.of(
            update(ConsentRow)
            .where(ConsentRow.institution == bindparam("institution_"),
                   ConsentRow.consent_id == bindparam("consent_id_"))
            .values(revoked_at=bindparam("revoked_at_"), last_seq=bindparam("last_seq_")),
            dialect,
            institution_="institution", consent_id_="consent_id", revoked_at_="revoked_at",
            last_seq_="last_seq",
        )  # fmt: skip
        self.update_head = Compiled.of(
            update(ChainHead)
            .where(ChainHead.id == bindparam("id_"))
            .values(seq=bindparam("seq_"), hash=bindparam("hash_")),
            dialect,
            id_="id",
            seq_="seq",
            hash_="hash",
        )
