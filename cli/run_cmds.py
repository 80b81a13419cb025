"""`jointcredit simulate`, `sweep` and `config resolve`: runs of the federation on this machine.

Their run-setting options are generated from `RunSettings` (`cli.options`), so a run started
here gets exactly what the same keys give `flwr run .`, a sweep's grid or `link run`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jointcredit.cli.options import with_settings_options
from jointcredit.cli.output import WideOption, print_json, show_table
from jointcredit.data.errors import DataValidationError
from jointcredit.federation.settings import RunSettings, SettingsError, settings_for_dataset

config_app = typer.Typer(no_args_is_help=True, help="Run settings as a run would resolve them.")
console = Console()
err = Console(stderr=True)

# Keys a local run sets itself (`--out`; every institution joins) or that only a deployed
# coordinator has: reachable through --run-config where they make sense, not as options.
LOCAL_RUN_EXCLUDES = {
    "data-dir",
    "out-dir",
    "resume",
    "institution-state-dir",
    "min-nodes",
    "trust-file",
    "coordinator-key",
    "coordinator-key-passphrase-env",
}
Verbose = Annotated[bool, typer.Option(help="show Flower's own logs")]


def progress_bar(to: Console = console) -> Progress:
    """A bar with a status line (rounds of a federation, cells of a sweep)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=to,
    )


def _quiet_flower(verbose: bool) -> None:
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.WARNING)


def resolve_local(config: dict[str, Any]) -> RunSettings:
    """The settings a local run of `config` gets, checked for its dataset's institutions;
    refusals exit 2 naming the keys."""
    try:
        return settings_for_dataset(RunSettings.from_run_config(config))
    except DataValidationError as exc:
        err.print(f"[red]data error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


@with_settings_options(LOCAL_RUN_EXCLUDES)
def simulate(
    config: dict[str, Any],
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/latest"),
    baselines: Annotated[bool, typer.Option(help="also train centralized and local-only")] = True,
    audit: Annotated[
        bool, typer.Option(help="membership-inference audit of the final model")
    ] = True,
    verbose: Verbose = False,
    force: Annotated[
        bool, typer.Option(help="replace OUT if it is not empty (only once the run succeeded)")
    ] = False,
    ray_address: Annotated[
        str,
        typer.Option(
            help="HOST:PORT of an existing Ray cluster to run the institutions on (default: "
            "a private Ray on this machine, on 127.0.0.1 only)"
        ),
    ] = "",
    ray_cpus: Annotated[
        int,
        typer.Option(
            min=0,
            help="CPUs each institution's Ray actor takes (0: all of this machine's, or 1 "
            "on a --ray-address cluster)",
        ),
    ] = 0,
    resumable: Annotated[
        bool,
        typer.Option(
            help="keep the run's keys (0700, beside OUT) until it succeeds, so that a killed "
            "run can be resumed with --resume; without it no key outlives the run"
        ),
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="continue a killed run from its last signed checkpoint: its OUT, or the "
            "'.OUT.partial-*' directory it left (settings as it recorded them)"
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="print one JSON document instead of the tables (progress on stderr): out, "
            "model, metrics_file (paths), and as in metrics.json institutions, federated, "
            "centralized, local_only, per_institution, personalization, fairness, security, "
            "privacy, trained_rounds, timing",
        ),
    ] = False,
    wide: WideOption = False,
    layout: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(["horizontal", "vertical"]),
            help="horizontal: institutions hold different applicants; vertical: parties hold "
            "different columns of the same applicants (a bank with the label, platforms), "
            "aligned by private set intersection (docs/VERTICAL.md)",
        ),
    ] = "horizontal",
) -> None:
    """Run a Flower simulation of the federation and compare it with its baselines. The run
    is written beside OUT and moved into place only when it succeeded."""
    if layout == "vertical":
        from jointcredit.cli.vertical_cmds import simulate_vertical

        given = {"--resume": resume is not None, "--ray-address": bool(ray_address),
                 "--ray-cpus": bool(ray_cpus), "--resumable": resumable,
                 "--no-audit": not audit, "--wide": wide}  # fmt: skip
        simulate_vertical(
            config,
            out,
            unsupported=[flag for flag, on in given.items() if on],
            baselines=baselines,
            force=force,
            as_json=as_json,
        )
        return
    from jointcredit.server import events
    from jointcredit.simulations.engine import RayAddressError, parse_ray_address
    from jointcredit.simulations.report import (
        comparison_table,
        fairness_table,
        institution_table,
        privacy_line,
        summary_json,
    )
    from jointcredit.simulations.resume import KilledRun, ResumeRefused, killed_run
    from jointcredit.simulations.simulate import OutputExists
    from jointcredit.simulations.simulate import simulate as run

    _quiet_flower(verbose)
    if ray_address:
        try:
            parse_ray_address(ray_address)
        except RayAddressError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from exc
    killed: KilledRun | None = None
    if resume is not None:
        try:
            killed = killed_run(resume, config)
        except (SettingsError, ResumeRefused) as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from exc
        settings, out = killed.settings, killed.out
        (err if as_json else console).print(
            f"resuming {killed.staging} from {killed.checkpoint.name}"
        )
    else:
        settings = resolve_local({**config, "out-dir": str(out.resolve())})
    progress = progress_bar(err if as_json else console)
    # Trees report once per tree; weight models once per round.
    total = settings.trees if settings.model == "gbdt" else settings.rounds
    task = progress.add_task("federation", total=total, status="starting")

    def on_event(ev: events.ServerEvent) -> None:
        if ev.phase == "preprocessing":
            progress.update(task, status="agreeing preprocessing")
        elif ev.phase == "binning":
            progress.update(task, status="agreeing bins and WOE")
        elif ev.phase == "round":
            auc = ev.metrics.get("auc")
            step = "tree" if settings.model == "gbdt" else "round"
            status = f"{step} {ev.server_round}: pooled AUC {auc:.4f}" if auc else ""
            progress.update(task, completed=ev.server_round, status=status)
        elif ev.phase == "personalization":
            progress.update(task, status="personalisation round")
        elif ev.phase == "done":
            progress.update(task, status="done")

    unsubscribe = events.subscribe(on_event)
    try:
        with progress:
            metrics = run(
                settings,
                with_baselines=baselines,
                with_audit=audit,
                replace=force,
                ray_address=ray_address,
                cpus_per_institution=ray_cpus,
                resume=killed,
                resumable=resumable,
            )
    except DataValidationError as exc:
        err.print(f"[red]data error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    except (SettingsError, OutputExists) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    except Exception as exc:
        err.print(f"[red]simulation failed:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from exc
    finally:
        unsubscribe()
    if as_json:
        print_json(summary_json(metrics, out))
        return
    show_table(console, comparison_table(metrics), wide)
    show_table(console, institution_table(metrics), wide)
    if metrics.fairness is not None:
        show_table(console, fairness_table(metrics.fairness), wide)
    security = metrics.security
    console.print(
        f"Signed updates: {security.verified_replies} replies verified, "
        f"{security.rejected_replies} rejected"
        + (f" {security.rejected_by_reason}" if security.rejected_replies else "")
    )
    privacy = metrics.privacy
    if privacy.aggregator != "fedavg" or privacy.attack.kind != "none":
        who = ", ".join(privacy.attack.attackers) or "nobody"
        console.print(
            f"Aggregation: {privacy.aggregator}; attack: {privacy.attack.kind} by {who}",
            soft_wrap=True,
        )
    console.print(privacy_line(privacy), soft_wrap=True)
    if settings.model == "scorecard":
        console.print(
            f"Binned scorecard: IV table and points in {out / 'model'} (binning.json, "
            f"scorecard.csv); `jointcredit binning {out / 'model'} --points` shows them",
            soft_wrap=True,
        )
    if audit and settings.split == "time":
        console.print(
            "No membership-inference audit under split = time: the test rows are later "
            "applicants, not non-members from the training rows' population.",
            soft_wrap=True,
        )
    console.print(
        f"{len(metrics.institutions)} institutions x "
        + (f"{settings.trees} trees" if settings.model == "gbdt" else f"{settings.rounds} rounds")
        + " in "
        f"{metrics.timing.total_seconds or 0.0:.1f} s. Model: {out / 'model'}  "
        f"Metrics: {out / 'metrics.json'}"
    )


def sweep(
    grid: Annotated[Path, typer.Option(help="grid file (TOML: seeds, base, grid)")],
    out: Annotated[Path, typer.Option(help="output directory (re-run to resume)")],
    verbose: Verbose = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="print one JSON document at the end instead of the report's path (progress "
            "on stderr): report, results_csv, results_json, summary_md, plots, runs, failed, "
            "settings (per setting: setting, values, runs, failed, and {mean, sd} of auc, ks, "
            "brier, epsilon_spent, mia_auc, mia_tpr_at_1pct_fpr, wall_seconds, "
            "min_adverse_impact_ratio, max_equal_opportunity_difference), cells (per run: "
            "cell, values, seed, status, error)",
        ),
    ] = False,
) -> None:
    """Run a grid of settings x seeds; write results.csv/json, summary.md, plots, report.md."""
    from jointcredit.simulations.sweep import Cell, cells, load_grid, run_sweep, setting_label
    from jointcredit.simulations.sweep_report import summary_json, write_outputs

    _quiet_flower(verbose)
    try:
        spec = load_grid(grid)
        total = len(cells(spec, out))  # validates every cell before the first one runs
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    shown = err if as_json else console
    progress = progress_bar(shown)
    task = progress.add_task("sweep", total=total, status="")

    def on_cell(cell: Cell, status: str) -> None:
        label = setting_label(cell.setting)
        if status != "running":
            progress.advance(task)
            shown.print(f"{label} seed {cell.seed}: {status}", soft_wrap=True)
        progress.update(task, status=f"{label} seed {cell.seed}: {status}")

    with progress:
        rows = run_sweep(spec, out, on_cell=on_cell, verbose=verbose)
    command = f"jointcredit sweep --grid {grid} --out {out}"
    paths = write_outputs(rows, spec, grid.read_text(encoding="utf-8"), out, command)
    if as_json:
        print_json(summary_json(rows, spec, out))
    else:
        console.print(f"Report: {paths['report']}  results: {paths['csv']}", soft_wrap=True)
    failed = sum(1 for r in rows if r["status"] == "failed")
    if failed:
        err.print(f"[red]{failed} of {len(rows)} runs failed[/red] (see the report)")
        raise typer.Exit(1)


@with_settings_options({"data-dir", "out-dir"})
def config_resolve(config: dict[str, Any]) -> None:
    """Print, as JSON, the run config these keys resolve to for their dataset's
    institutions (recipes applied, every rule checked); exit 2 naming the keys if the run
    could not start. A vertical run config (`layout=vertical`) resolves to the vertical
    federation's settings."""
    if config.get("layout") == "vertical":
        from jointcredit.federation.vertical import VerticalSettings
        from jointcredit.simulations.vertical import known_dataset

        try:
            vertical = VerticalSettings.from_app_config(config)
        except SettingsError as exc:
            err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(2) from exc
        if not known_dataset(vertical.dataset):
            err.print(f"[red]error:[/red] unknown vertical dataset {vertical.dataset!r}")
            raise typer.Exit(2)
        console.print_json(json.dumps(vertical.to_run_config()))
        return
    settings = resolve_local(config)
    console.print_json(json.dumps(settings.to_run_config()))


config_app.command("resolve")(config_resolve)
