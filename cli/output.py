"""What the commands print: tables that never cut a value (folded to the terminal, or at their
full width with `--wide`), and `--json` documents alone on stdout."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

JsonOption = Annotated[
    bool, typer.Option("--json", help="print JSON (the same facts as the table) instead")
]
WideOption = Annotated[
    bool,
    typer.Option(
        "--wide",
        help="print tables at their full width (ids, names and key ids on one line each, "
        "to copy) instead of folding long values to the terminal's width",
    ),
]

# Wider than any table we print; a table is then printed at its own width.
_UNBOUNDED = 10_000


def print_json(value: Any) -> None:
    """One JSON document on stdout, nothing else there (announcements go to stderr). Strict
    JSON, for jq and every other parser: an infinite or undefined number (epsilon of a run
    without DP, an AUC without both classes) is null."""
    typer.echo(
        json.dumps(_finite(value), ensure_ascii=False, indent=2, default=_plain, allow_nan=False)
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    item = getattr(value, "item", None)
    return _finite(item()) if callable(item) and not isinstance(value, str | bytes) else value


def _plain(value: Any) -> Any:
    """NumPy scalars as JSON numbers or strings."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def show_table(console: Console, table: Table, wide: bool = False) -> None:
    """Print `table` without cutting a value: long cells fold onto more lines (rich's default
    would end them with an ellipsis), or with `wide` the table takes the width it needs."""
    for column in table.columns:
        if column.overflow == "ellipsis":
            column.overflow = "fold"
    if not wide:
        console.print(table)
        return
    options = console.options.update(max_width=_UNBOUNDED)
    width = Measurement.get(console, options, table).maximum
    # A console of that width on the same stream (`print(width=)` is capped at the console's).
    Console(
        file=console.file,
        width=max(width, console.width),
        force_terminal=console.is_terminal,
        no_color=console.no_color,
    ).print(table)
