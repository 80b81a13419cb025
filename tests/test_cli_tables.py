"""Tables at 80 columns never cut a value a user must copy: long institution ids and key ids
fold onto more lines (rich's default ends them with an ellipsis), and `--wide` prints each on
one line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jointcredit.cli.main import app

LONG_ID = "regional-cooperative-savings-and-loan-association-of-the-northern-counties"


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def trust_file(tmp_path: Path) -> tuple[Path, str]:
    _cli("keys", "new", "--coordinator", "--out", str(tmp_path / "coord"))
    _cli("keys", "new", "--institution", LONG_ID, "--out", str(tmp_path / "inst"))
    trust = tmp_path / "trust.json"
    _cli("trust", "init", "--out", str(trust), "--federation", "demo",
         "--coordinator-key", str(tmp_path / "coord" / "coordinator.key"))  # fmt: skip
    added = _cli("trust", "add", "--trust", str(trust), "--institution", LONG_ID,
                 "--public-key", str(tmp_path / "inst" / f"{LONG_ID}.pub"),
                 "--coordinator-key", str(tmp_path / "coord" / "coordinator.key"))  # fmt: skip
    key_id = added.split(" key ")[1].split()[0]
    return trust, key_id


def test_trust_show_folds_at_80_columns_and_is_whole_with_wide(
    trust_file: tuple[Path, str],
) -> None:
    trust, key_id = trust_file
    folded = _cli("trust", "show", str(trust))
    assert "…" not in folded
    assert max(len(line) for line in folded.splitlines()) <= 80
    cells = "".join(line.split("│")[1].strip() for line in folded.splitlines()
                    if line.startswith("│"))  # fmt: skip
    assert LONG_ID in cells  # every character is there, over several lines
    wide = _cli("trust", "show", str(trust), "--wide")
    row = next(line for line in wide.splitlines() if LONG_ID in line)
    assert key_id in row and "…" not in wide


def test_every_table_printed_through_show_table_folds() -> None:
    """The commands print their tables through `show_table`: a column left at rich's default
    (ellipsis, as the simulate fairness table's and the gates table's were) folds too."""
    from rich.console import Console
    from rich.table import Table

    from jointcredit.cli.output import show_table

    console = Console(width=80, record=True, file=io.StringIO())
    table = Table(title="t")
    for col in ("group", "what"):
        table.add_column(col)
    table.add_row(LONG_ID, "x " * 60)
    show_table(console, table)
    text = console.export_text()
    assert "…" not in text
    assert LONG_ID in "".join(line.split("│")[1].strip() for line in text.splitlines()
                              if line.startswith("│"))  # fmt: skip


def test_json_output_is_strict_json(capsys: pytest.CaptureFixture[str]) -> None:
    """jq refuses `Infinity`/`NaN`: an epsilon without DP or an undefined AUC is null."""
    import json

    import numpy as np

    from jointcredit.cli.output import print_json

    print_json({"epsilon": float("inf"), "auc": float("nan"), "x": [np.float64("inf"), 1.5]})
    assert json.loads(capsys.readouterr().out, parse_constant=lambda c: 1 / 0) == {
        "epsilon": None, "auc": None, "x": [None, 1.5],
    }  # fmt: skip
