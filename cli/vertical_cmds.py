"""`jointcredit simulate --layout vertical`: the vertical federation's run from the command
line. The run-setting options a vertical run has are the gradient-boosted trees' and the
data's (`--model scorecard`: the data's and `--max-bins` only); any other one given (rounds,
strategy, privacy, a tree setting for a scorecard, ...) is refused with exit 2 naming it, as
are the simulate options a vertical run does not have yet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jointcredit.cli.output import print_json, show_table
from jointcredit.data.errors import DataValidationError
from jointcredit.federation.vertical import TREE_KEYS, VerticalSettings

console = Console()
err = Console(stderr=True)
# What a local vertical run sets itself, never the caller.
_OWN = {"layout", "out-dir", "keys-dir", "trust-file", "parties"}
ACCEPTED = sorted(
    {f.alias or n for n, f in VerticalSettings.model_fields.items()} - _OWN - {"timeout"}
)


def _refuse(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(2)


def vertical_settings(config: dict[str, Any], unsupported: list[str]) -> VerticalSettings:
    """The settings of a vertical run from the keys the caller gave; exit 2 for keys and
    options a vertical run does not take (a tree setting for `--model scorecard`), for an
    unknown dataset."""
    from jointcredit.simulations.vertical import known_dataset

    if unsupported:
        raise _refuse(f"not supported with --layout vertical: {', '.join(unsupported)}")
    model = config.get("model", "gbdt")
    if model not in ("gbdt", "scorecard"):
        raise _refuse(
            f"--model {model} is not supported with --layout vertical (vertical runs train "
            "gradient-boosted trees, --model gbdt, or a scorecard, --model scorecard)"
        )
    if model == "scorecard" and (trees := sorted(set(config) & TREE_KEYS)):
        raise _refuse(
            f"not meaningful for --model scorecard: {', '.join(trees)} (tree settings; the "
            "vertical scorecard takes max-bins, max-categories, min-category-count)"
        )
    if "data-dir" in config:
        config = {k: x for k, x in config.items() if k != "data-dir"} | {
            "dataset": config["data-dir"]
        }
    wrong = sorted(set(config) - set(ACCEPTED))
    if wrong:
        raise _refuse(
            f"not meaningful for --layout vertical: {', '.join(wrong)} (a vertical run takes "
            f"{', '.join(ACCEPTED)})"
        )
    try:
        settings = VerticalSettings.from_run_config(config)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise _refuse(problems) from exc
    if not known_dataset(settings.dataset):
        raise _refuse(
            f"unknown vertical dataset {settings.dataset!r}: sba-vertical, synthetic-vertical, "
            "or a directory in the vertical layout (a directory per party, schema.toml)"
        )
    return settings


def simulate_vertical(
    config: dict[str, Any],
    out: Path,
    *,
    unsupported: list[str],
    baselines: bool,
    force: bool,
    as_json: bool,
) -> None:
    from jointcredit.simulations.simulate import OutputExists
    from jointcredit.simulations.vertical import Refused
    from jointcredit.simulations.vertical import simulate_vertical as run

    settings = vertical_settings(config, unsupported)
    try:
        metrics = run(settings, out, replace=force, with_baselines=baselines)
    except DataValidationError as exc:
        err.print(f"[red]data error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    except (OutputExists, Refused) as exc:
        raise _refuse(str(exc)) from exc
    except Exception as exc:
        err.print(f"[red]simulation failed:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    if as_json:
        print_json({"out": str(out), "model": str(out / "model"), **metrics})
        return
    table = Table(title=f"vertical federation: {', '.join(metrics['vertical']['parties'])}")
    for col in ("model", "AUC", "KS", "Brier"):
        table.add_column(col)
    for name in ("federated", "centralized", "label_party_only"):
        row = metrics.get(name)
        if row:
            table.add_row(
                name, *(f"{row[k]:.4f}" if k in row else "-" for k in ("auc", "ks", "brier"))
            )
    show_table(console, table, False)
    if metrics.get("fairness"):  # the bank's protected attributes (its schema table)
        from jointcredit.federation.fairness import Fairness
        from jointcredit.simulations.report import fairness_table

        figures = Fairness.model_validate(metrics["fairness"])
        show_table(console, fairness_table(figures, "the bank's held-out aligned rows"), False)
    vert = metrics["vertical"]
    console.print(
        f"intersection {vert['intersection_size']} applicants; PSI {vert['psi_seconds']:.1f} s, "
        f"training {vert['training_seconds']:.1f} s, {vert['bytes_sent']} bytes through the "
        f"coordinator in {vert['messages']} messages, every reply verified",
        soft_wrap=True,
    )
    if metrics["config"].get("split") == "time":
        console.print(
            f"out of time: tested on the latest {int(metrics['federated']['test-rows'])} aligned "
            f"applicants by the bank's time column, trained on the "
            f"{int(metrics['federated']['train-rows'])} before them",
            soft_wrap=True,
        )
    console.print(f"model (each party's part signed by its key): {out / 'model'}", soft_wrap=True)
