"""The monitoring window's store: the last N served applicants (score and feature bin codes),
in a database every service worker sees, and the last band each stability index was in.

One row per group of applicants a worker wrote at once (their scores and codes as arrays), so
writing and reading the window cost a statement per group, not per applicant; the window is
the newest groups' applicants, cut at N, and a group wholly older than the last N is deleted.

Beside a SQLite audit log the window has its own file (`<db>-monitoring`): its inserts must
not take the audit log's write lock, which decisions queue on. On another database (Postgres)
it is two more tables there. Entries are appended in groups off the request path
(`service.monitoring`) and the oldest beyond the window's size deleted with each group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from jointcredit.service import sqlite

metadata = MetaData()
entries = Table(
    "monitoring_window",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("applicants", Integer, nullable=False),
    Column("scores", LargeBinary, nullable=False),  # int16, one per applicant
    Column("codes", LargeBinary, nullable=False),  # uint16, (applicants, features) row-major
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
    if audit_url.startswith(prefix) and audit_url != f"{prefix}:memory:":
        path, mark, query = audit_url.partition("?")  # the file, then the URL's options
        return f"{path}-monitoring{mark}{query}"
    return audit_url


class WindowStore:
    def __init__(self, url: str, size: int, n_features: int) -> None:
        self.size, self.n_features = size, n_features
        memory = url in ("sqlite://", "sqlite:///:memory:")
        # In memory: one database for every thread (the background writer, the GET's reader).
        options: dict[str, Any] = (
            {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
            if memory
            else {}
        )
        self.engine = create_engine(url, future=True, **options)
        database = self.engine.url.database
        if self.engine.dialect.name == "sqlite" and not memory:
            sqlite.private_database(str(database))  # applicants' bins: owner-only like the log
            sqlite.configure(self.engine)
        metadata.create_all(self.engine)

    def add(self, scores: Sequence[int], codes: np.ndarray) -> None:
        """Append applicants (`codes`: (n, features)) as one group and delete the groups that
        lie wholly beyond the window."""
        n = min(len(scores), self.size)
        if not n:
            return
        values = {
            "applicants": n,
            "scores": np.asarray(scores, dtype=np.int16)[-n:].tobytes(),
            "codes": np.ascontiguousarray(codes[-n:], dtype=np.uint16).tobytes(),
        }
        with self.engine.begin() as conn:
            conn.execute(insert(entries).values(**values))
            groups = conn.execute(
                select(entries.c.id, entries.c.applicants).order_by(entries.c.id.desc())
            ).all()
            newer, keep = 0, None
            for group_id, applicants in groups:
                if newer >= self.size:
                    keep = group_id
                    break
                newer += applicants
            if keep is not None:
                conn.execute(delete(entries).where(entries.c.id <= keep))

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """The last `size` applicants, newest first: their scores and (n, features) codes."""
        query = select(entries.c.scores, entries.c.codes).order_by(entries.c.id.desc())
        scores: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        total = 0
        with self.engine.connect() as conn:
            for blob_scores, blob_codes in conn.execute(query):
                group = np.frombuffer(blob_scores, dtype=np.int16)
                scores.append(group[::-1])
                rows = np.frombuffer(blob_codes, dtype=np.uint16).reshape(-1, self.n_features)
                codes.append(rows[::-1])
                total += len(group)
                if total >= self.size:
                    break
        if not scores:
            return np.zeros(0, np.int64), np.zeros((0, self.n_features), np.uint16)
        return (
            np.concatenate(scores)[: self.size].astype(np.int64),
            np.concatenate(codes)[: self.size],
        )

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
