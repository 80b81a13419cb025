"""`jointcredit ...` commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape

from jointcredit.cli.consent_cmds import consent_app
from jointcredit.cli.decision_cmds import decide, score
from jointcredit.cli.deploy_cmds import link_app, node_app, provision
from jointcredit.cli.governance_cmds import promote, report
from jointcredit.cli.model_cmds import binning
from jointcredit.cli.run_cmds import config_app, simulate, sweep
from jointcredit.cli.service_cmds import apikey_app, audit_app, exposure_app, serve
from jointcredit.cli.trust_cmds import keys_app, trust_app, verify
from jointcredit.cli.vertical_serve_cmds import vertical_app
from jointcredit.data.errors import DataValidationError
from jointcredit.data.files import DEFAULT_MAX_FILE_MB

# No local variables in tracebacks: they would print keys, tokens and database passwords.
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Federated credit scoring.",
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        import flwr

        typer.echo(f"jointcredit {version('jointcredit')} (Flower {flwr.__version__})")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Federated credit scoring."""


data_app = typer.Typer(no_args_is_help=True, help="Check datasets before training.")
app.command()(simulate)
app.command()(sweep)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(keys_app, name="keys")
app.add_typer(trust_app, name="trust")
app.command("verify")(verify)
app.command("binning")(binning)
app.command("report")(report)
app.command("promote")(promote)
app.command("serve")(serve)
app.command("decide")(decide)
app.add_typer(apikey_app, name="apikey")
app.add_typer(audit_app, name="audit")
app.add_typer(consent_app, name="consent")
app.add_typer(exposure_app, name="exposure")
app.add_typer(vertical_app, name="vertical")
app.add_typer(link_app, name="link")
app.add_typer(node_app, name="node")
app.command()(provision)
app.command()(score)
console = Console()
err = Console(stderr=True)


@data_app.command("check")
def data_check(
    directory: Path,
    schema: Annotated[Path | None, typer.Option(help="default DIR/schema.toml")] = None,
    min_rows: Annotated[int, typer.Option(min=1)] = 100,
    max_file_mb: Annotated[
        int, typer.Option(min=1, help="largest institution file read, in MiB")
    ] = DEFAULT_MAX_FILE_MB,
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON (the same facts) instead; exit codes stay")
    ] = False,
    layout: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(["horizontal", "vertical"]),
            help="horizontal: a file per institution; vertical: a directory per party "
            "(docs/DATA.md)",
        ),
    ] = "horizontal",
) -> None:
    """Validate a bring-your-own-data directory without training: the same checks, and the
    same refusals, as `simulate` on it."""
    from jointcredit.data.catalog import DataConfig, load_federation

    if layout == "vertical":
        _check_vertical(directory, schema, max_file_mb, as_json)
        return
    config = DataConfig(
        dataset=str(directory), schema=str(schema or ""), min_rows=min_rows, max_file_mb=max_file_mb
    )
    try:
        fed = load_federation(config)
    except DataValidationError as exc:
        raise _data_error(directory, exc, as_json) from exc
    counts: dict[str, dict[str, float]] = {}
    for inst, d in fed.institutions.items():
        n = len(d.train) + len(d.test)
        counts[inst] = {"rows": n, "default_rate": float(d.train.y.sum() + d.test.y.sum()) / n}
    if as_json:
        facts = {"ok": True, "directory": str(directory), "institutions": counts,
                 "features": list(fed.schema.features)}  # fmt: skip
        typer.echo(json.dumps(facts, indent=2))
        return
    for inst, c in counts.items():
        console.print(f"{inst}: {c['rows']} rows, default rate {c['default_rate']:.3f}")
    console.print(
        f"[green]ok[/green]: {len(fed.ids)} institutions, {len(fed.schema.features)} features"
    )


def _data_error(directory: Path, exc: DataValidationError, as_json: bool) -> typer.Exit:
    """`data check`'s refusal, either layout: as JSON or a red line, exit status 2."""
    if as_json:
        typer.echo(json.dumps({"ok": False, "directory": str(directory), "error": str(exc)}))
    else:
        err.print(f"[red]data error:[/red] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(2)


def _check_vertical(directory: Path, schema: Path | None, max_mb: int, as_json: bool) -> None:
    from jointcredit.data.vertical import load_vertical

    try:
        data = load_vertical(directory, schema, max_mb=max_mb)
    except DataValidationError as exc:
        raise _data_error(directory, exc, as_json) from exc
    # All parties' files are on this machine here, so their overlap is no secret to it.
    shared = set.intersection(*(set(p.ids) for p in data.parties.values()))
    facts: dict[str, dict[str, object]] = {}
    for name, party in data.parties.items():
        facts[name] = {"rows": len(party), "features": list(data.schema.parties[name].features)}
        if party.label_column is not None:
            facts[name]["label"] = True
            facts[name]["default_rate"] = float(party.frame[party.label_column].mean())
    if as_json:
        typer.echo(json.dumps({"ok": True, "directory": str(directory), "layout": "vertical",
                               "parties": facts, "shared_ids": len(shared)}, indent=2))  # fmt: skip
        return
    for name, party in data.parties.items():
        rate = (
            f", label, default rate {facts[name]['default_rate']:.3f}"
            if "label" in facts[name]
            else ""
        )
        features = len(data.schema.parties[name].features)
        console.print(f"{name}: {len(party)} rows, {features} features{rate}")
    console.print(f"[green]ok[/green]: {len(facts)} parties, {len(shared)} identifiers in all")


@app.command()
def schema(
    what: Annotated[
        str,
        typer.Argument(
            click_type=click.Choice(["metrics", "settings"]),
            help="metrics (OUT/metrics.json) or settings (the run config)",
        ),
    ],
) -> None:
    """Print the JSON schema of OUT/metrics.json or of the run settings."""
    from jointcredit.federation.metrics import metrics_schema
    from jointcredit.federation.settings import settings_schema

    document = metrics_schema() if what == "metrics" else settings_schema()
    print(json.dumps(document, indent=2))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
