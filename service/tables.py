"""The audit log's tables (SQLAlchemy ORM).

`audit_log` is append-only, one hash-chained row per entry (service/chain.py); `chain_head`
holds the last row's number and hash, updated in the same transaction, so deleting the newest
rows is caught too. `decisions` is the current view of each decision (status after reviews)
that the API reads: derived data, checked against the chain by `audit verify`. `consents` is
the institutions' consent registry (service/consent.py), written with its chained entries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class AuditRow(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    decision_id: Mapped[str] = mapped_column(String(64), index=True)
    institution: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ChainHead(Base):
    __tablename__ = "chain_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class DecisionRow(Base):
    __tablename__ = "decisions"
    decision_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    institution: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    final_decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[str] = mapped_column(String(40))
    # JSON text, or empty when the entry that made the decision keeps the response itself.
    response: Mapped[str] = mapped_column(Text)
    last_seq: Mapped[int] = mapped_column(ForeignKey("audit_log.seq"))


class ConsentRow(Base):
    """An applicant's consent to a cross-party use of its data, as the institution registered
    it (`jointcredit consent add`); every add and revoke is also a chained entry."""

    __tablename__ = "consents"
    institution: Mapped[str] = mapped_column(String(128), primary_key=True)
    consent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    applicant_ref: Mapped[str] = mapped_column(String(128))  # the joint request's applicant_id
    purpose: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[str] = mapped_column(String(40))
    expires_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    revoked_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    last_seq: Mapped[int] = mapped_column(ForeignKey("audit_log.seq"))


# A `decisions` row as plain column values: appends take these rather than ORM objects, whose
# construction was the largest single cost of an append in a profile of the service.
ViewRow = dict[str, Any]


def as_view(row: DecisionRow) -> ViewRow:
    return {c.name: getattr(row, c.name) for c in DecisionRow.__table__.columns}
