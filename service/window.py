"""The monitoring window's store: the last N served applicants (score and feature bin codes),
in a database every service worker sees, and the last band each stability index was in.

Beside a SQLite audit log the window has its own file (`<db>-monitoring`): its inserts must
not take the audit log's write lock, which decisions queue on. On another database (Postgres)
it is two more tables there. Entries are appended in groups off the request path
(`service.monitoring`) and the oldest beyond the window's size deleted with each group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import (
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from jointcredit.service import sqlite

metadata = MetaData()
entries = Table(
    "monitoring_window",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("score", Integer, nullable=False),
    Column("codes", LargeBinary, nullable=False),  # one applicant's bin codes, uint16
)
bands = Table(
    "monitoring_bands",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("band", String(10), nullable=False),
)


def window_url(audit_url: str) -> str:
    """Where the window lives for an audit log at `audit_url`."""
    prefix = "sqlite:///"
    if audit_url.startswith(prefix) and audit_url not in (prefix, f"{prefix}:memory:"):
        return f"{audit_url}-monitoring"
    return audit_url


class WindowStore:
    def __init__(self, url: str, size: int, n_features: int) -> None:
        self.size, self.n_features = size, n_features
        self.engine = create_engine(url, future=True)
        database = self.engine.url.database
        if self.engine.dialect.name == "sqlite" and database not in (None, "", ":memory:"):
            sqlite.private_database(str(database))  # applicants' bins: owner-only like the log
            sqlite.configure(self.engine)
        metadata.create_all(self.engine)

    def add(self, scores: Sequence[int], codes: np.ndarray) -> None:
        """Append applicants (`codes`: (n, features)) and drop those beyond the window."""
        rows = np.ascontiguousarray(codes, dtype=np.uint16)
        values = [{"score": int(s), "codes": rows[k].tobytes()} for k, s in enumerate(scores)][
            -self.size :
        ]
        if not values:
            return
        with self.engine.begin() as conn:
            conn.execute(insert(entries), values)
            last = conn.execute(select(func.max(entries.c.id))).scalar_one()
            conn.execute(delete(entries).where(entries.c.id <= last - self.size))

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """The last `size` applicants: their scores and (n, features) codes."""
        query = select(entries.c.score, entries.c.codes).order_by(entries.c.id.desc())
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(self.size)).all()
        scores = np.array([r[0] for r in rows], dtype=np.int64)
        blob = b"".join(r[1] for r in rows)
        codes = np.frombuffer(blob, dtype=np.uint16).reshape(len(rows), self.n_features)
        return scores, codes

    def cross(self, name: str, band: str) -> str | None:
        """Record that `name` is now in `band`; the band it left when this call is the one
        that changed it (one caller across every worker), else None."""
        with self.engine.begin() as conn:
            before = conn.execute(select(bands.c.band).where(bands.c.name == name)).scalar()
            if before is None:
                try:
                    conn.execute(insert(bands).values(name=name, band=band))
                except IntegrityError:  # another worker recorded it first
                    return None
                return None if band == "stable" else "stable"
            if before == band:
                return None
            changed = conn.execute(
                update(bands).where(bands.c.name == name, bands.c.band == before).values(band=band)
            ).rowcount
            return str(before) if changed == 1 else None

    def close(self) -> None:
        self.engine.dispose()
