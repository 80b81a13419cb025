"""One error type for every data problem, so the CLI can print it without a traceback."""

from __future__ import annotations


class DataValidationError(ValueError):
    """Bad input data or schema, found before any training.

    The message always names where (file, and column when there is one) and what is wrong.
    """

    def __init__(self, problem: str, *, source: str | None = None, column: str | None = None):
        self.problem = problem
        self.source = source
        self.column = column
        where = []
        if source is not None:
            where.append(f"file {source}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)
