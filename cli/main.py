"""`jointcredit ...` commands."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jointcredit.cli.deploy_cmds import link_app, node_app, provision
from jointcredit.cli.service_cmds import apikey_app, audit_app, decide, exposure_app, serve
from jointcredit.cli.trust_cmds import keys_app, trust_app, verify
from jointcredit.data.errors import DataValidationError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Federated credit scoring.")
data_app = typer.Typer(no_args_is_help=True, help="Check datasets before training.")
app.add_typer(data_app, name="data")
app.add_typer(keys_app, name="keys")
app.add_typer(trust_app, name="trust")
app.command("verify")(verify)
app.command("serve")(serve)
app.command("decide")(decide)
app.add_typer(apikey_app, name="apikey")
app.add_typer(audit_app, name="audit")
app.add_typer(exposure_app, name="exposure")
app.add_typer(link_app, name="link")
app.add_typer(node_app, name="node")
app.command()(provision)
console = Console()
err = Console(stderr=True)


class Strategy(StrEnum):
    fedavg = "fedavg"
    fedprox = "fedprox"
    fedavgm = "fedavgm"
    scaffold = "scaffold"


class Optimizer(StrEnum):
    sgd = "sgd"
    adam = "adam"


class Schedule(StrEnum):
    constant = "constant"
    linear = "linear"
    cosine = "cosine"


class ModelKind(StrEnum):
    logreg = "logreg"
    mlp = "mlp"


class PersonalizationChoice(StrEnum):
    auto = "auto"
    ditto = "ditto"
    hierarchical = "hierarchical"


class AggregatorChoice(StrEnum):
    fedavg = "fedavg"
    median = "median"
    trimmed = "trimmed"
    krum = "krum"
    multikrum = "multikrum"
    bulyan = "bulyan"


class AttackChoice(StrEnum):
    none = "none"
    sign_flip = "sign-flip"
    scale = "scale"
    label_flip = "label-flip"


class PrivacyChoice(StrEnum):
    none = "none"
    dp_record = "dp-record"
    dp_institution = "dp-institution"
    secagg = "secagg"


class ClippingSide(StrEnum):
    server = "server"
    client = "client"


def _progress() -> Progress:
    """A bar with a status line (rounds of a federation, cells of a sweep)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )


def _quiet_flower(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.getLogger("flwr").setLevel(level)


@app.command()
def simulate(
    dataset: Annotated[
        str, typer.Option(help="sba (shipped sample), sba-full, synthetic, or a directory")
    ] = "sba",
    schema: Annotated[
        Path | None, typer.Option(help="schema file for a directory (default DIR/schema.toml)")
    ] = None,
    institutions: Annotated[
        int | None, typer.Option(help="number of institutions (largest first); default all")
    ] = None,
    rounds: Annotated[int, typer.Option(min=1)] = 20,
    strategy: Annotated[
        Strategy | None, typer.Option(help="Flower strategy [default: fedavgm]")
    ] = None,
    model: ModelKind = ModelKind.logreg,
    seed: int = 42,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/latest"),
    optimizer: Annotated[
        Optimizer | None, typer.Option(help="client optimiser [default: sgd; mlp: adam]")
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="[default: 0.3; mlp: 0.003]")] = None,
    lr_schedule: Annotated[Schedule | None, typer.Option(help="by round [default: linear]")] = None,
    local_steps: Annotated[
        int | None, typer.Option(min=0, help="per round; 0 = full epochs [default 36; mlp 0]")
    ] = None,
    local_epochs: Annotated[int, typer.Option(min=1, help="when local steps = 0")] = 1,
    server_momentum: Annotated[
        float | None, typer.Option(min=0.0, max=0.99, help="FedAvgM [default 0.7; mlp 0.5]")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    proximal_mu: Annotated[float, typer.Option(min=0.0, help="FedProx mu")] = 0.01,
    heterogeneity: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="synthetic: how non-IID institutions are")
    ] = 0.5,
    synthetic_rows: Annotated[int, typer.Option(min=200)] = 3000,
    baselines: Annotated[bool, typer.Option(help="also train centralized and local-only")] = True,
    audit: Annotated[
        bool, typer.Option(help="membership-inference audit of the final model")
    ] = True,
    min_valid_fraction: Annotated[
        float,
        typer.Option(min=0.01, max=1.0, help="share of verified replies a round needs"),
    ] = 0.5,
    adversary: Annotated[
        str,
        typer.Option(
            help="misbehaving institutions, e.g. 'bank-a:tamper-array' (attacks: unsigned, "
            "tamper-array, tamper-metric, replay, foreign-key, impersonate, key-swap, "
            "truncate, forge, arrays-only; secagg-dropout)"
        ),
    ] = "",
    aggregator: Annotated[
        AggregatorChoice,
        typer.Option(help="aggregation rule: fedavg (= --strategy) or a robust Flower strategy"),
    ] = AggregatorChoice.fedavg,
    attackers: Annotated[
        int, typer.Option(min=0, help="institutions that poison their updates (drawn by seed)")
    ] = 0,
    attack: Annotated[AttackChoice, typer.Option(help="what the attackers do")] = (
        AttackChoice.none
    ),
    attack_scale: Annotated[
        float, typer.Option(min=0.0, help="sign-flip/scale factor on the honest update")
    ] = 10.0,
    assumed_attackers: Annotated[
        int, typer.Option(min=-1, help="Krum/MultiKrum/Bulyan f (-1: --attackers, at least 1)")
    ] = -1,
    trim_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.49, help="trimmed mean: share cut at each end")
    ] = 0.2,
    privacy: Annotated[
        PrivacyChoice,
        typer.Option(
            help="none; dp-record: DP-SGD in each institution (protects borrowers); "
            "dp-institution: noise on the average of clipped updates (protects institutions); "
            "secagg: Flower SecAgg+, the coordinator sees only the sum of masked updates"
        ),
    ] = PrivacyChoice.none,
    epsilon: Annotated[
        float,
        typer.Option(
            min=0.0, help="budget: per institution (dp-record; inf: clip only) or federation"
        ),
    ] = 1.0,
    delta: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1e-5,
    noise_multiplier: Annotated[
        float,
        typer.Option(min=0.0, help="fixed DP-SGD noise (0: calibrated to spend the budget)"),
    ] = 0.0,
    max_grad_norm: Annotated[
        float, typer.Option(min=0.0, help="DP-SGD per-row gradient clipping bound")
    ] = 1.0,
    clipping_norm: Annotated[
        float, typer.Option(min=0.0, help="dp-institution: bound on each update's L2 norm")
    ] = 1.0,
    dp_clipping: Annotated[
        ClippingSide, typer.Option(help="dp-institution: who clips (client: before signing)")
    ] = ClippingSide.server,
    secagg_shares: Annotated[
        float, typer.Option(min=0.0, help="secagg: key shares per institution (<= 1: a share)")
    ] = 1.0,
    secagg_threshold: Annotated[
        float, typer.Option(min=0.0, help="secagg: shares that rebuild a key (<= 1: a share)")
    ] = 0.5,
    personalization: Annotated[
        PersonalizationChoice,
        typer.Option(
            help="how institutions personalise the final model (docs/PERSONALISATION.md); "
            "auto: hierarchical for logreg without privacy or robust rules, else ditto"
        ),
    ] = PersonalizationChoice.auto,
    verbose: Annotated[bool, typer.Option(help="show Flower's own logs")] = False,
) -> None:
    """Run a Flower simulation of the federation and compare it with its baselines."""
    from jointcredit.models.settings import RunSettings, model_recipe
    from jointcredit.server import events
    from jointcredit.simulations.report import comparison_table, institution_table, privacy_line
    from jointcredit.simulations.simulate import simulate as run

    _quiet_flower(verbose)
    # Unset options take the model's recipe (settings defaults; MLP_RECIPE for the MLP).
    config = model_recipe(model.value, privacy.value, aggregator.value)
    if privacy is PrivacyChoice.dp_institution:
        config["strategy"] = "fedavg"  # Flower accounts only for plain FedAvg
    chosen = {
        "strategy": strategy,
        "optimizer": optimizer,
        "learning-rate": learning_rate,
        "lr-schedule": lr_schedule,
        "local-steps": local_steps,
        "server-momentum": server_momentum,
    }
    config.update(
        {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in chosen.items() if v is not None}
    )
    try:
        settings = RunSettings.from_run_config(
            {
                **config,
                "dataset": dataset,
                "schema": str(schema) if schema else "",
                "institutions": institutions or 0,
                "rounds": rounds,
                "model": model.value,
                "seed": seed,
                "out-dir": str(out.resolve()),
                "local-epochs": local_epochs,
                "batch-size": batch_size,
                "proximal-mu": proximal_mu,
                "synthetic-heterogeneity": heterogeneity,
                "synthetic-rows": synthetic_rows,
                "min-valid-fraction": min_valid_fraction,
                "adversary": adversary,
                "aggregator": aggregator.value,
                "attackers": attackers,
                "attack": attack.value,
                "attack-scale": attack_scale,
                "assumed-attackers": assumed_attackers,
                "trim-fraction": trim_fraction,
                "privacy": privacy.value,
                "epsilon": epsilon,
                "delta": delta,
                "noise-multiplier": noise_multiplier,
                "max-grad-norm": max_grad_norm,
                "clipping-norm": clipping_norm,
                "dp-clipping": dp_clipping.value,
                "secagg-shares": secagg_shares,
                "secagg-threshold": secagg_threshold,
                "personalization": personalization.value,
            }
        )
        if (attackers > 0) != (attack is not AttackChoice.none):
            raise ValueError("--attackers N and --attack KIND go together")
        if adversary:
            from jointcredit.client.adversary import parse_adversary

            parse_adversary(adversary)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc

    progress = _progress()
    task = progress.add_task("federation", total=rounds, status="starting")

    def on_event(ev: events.ServerEvent) -> None:
        if ev.phase == "preprocessing":
            progress.update(task, status="agreeing preprocessing")
        elif ev.phase == "round":
            auc = ev.metrics.get("auc")
            status = f"round {ev.server_round}: pooled AUC {auc:.4f}" if auc else ""
            progress.update(task, completed=ev.server_round, status=status)
        elif ev.phase == "personalization":
            progress.update(task, status="personalisation round")
        elif ev.phase == "done":
            progress.update(task, status="done")

    unsubscribe = events.subscribe(on_event)
    try:
        with progress:
            metrics = run(settings, with_baselines=baselines, with_audit=audit)
    except DataValidationError as exc:
        err.print(f"[red]data error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except Exception as exc:
        err.print(f"[red]simulation failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        unsubscribe()
    console.print(comparison_table(metrics))
    console.print(institution_table(metrics))
    security = metrics["security"]
    console.print(
        f"Signed updates: {security['verified_replies']} replies verified, "
        f"{security['rejected_replies']} rejected"
        + (f" {security['rejected_by_reason']}" if security["rejected_replies"] else "")
    )
    privacy_info = metrics["privacy"]
    if privacy_info["aggregator"] != "fedavg" or privacy_info["attack"]["kind"] != "none":
        who = ", ".join(privacy_info["attack"]["attackers"]) or "nobody"
        console.print(
            f"Aggregation: {privacy_info['aggregator']}; attack: "
            f"{privacy_info['attack']['kind']} by {who}",
            soft_wrap=True,
        )
    console.print(privacy_line(privacy_info), soft_wrap=True)
    console.print(
        f"{len(metrics['institutions'])} institutions x {rounds} rounds in "
        f"{metrics['timing']['total_seconds']:.1f} s. Model: {out / 'model'}  "
        f"Metrics: {out / 'metrics.json'}"
    )


@app.command()
def score(
    model_dir: Annotated[Path, typer.Argument(help="a model directory (OUT/model)")],
    input_file: Annotated[
        Path | None, typer.Option("--input", help="CSV/Parquet of applicants (schema features)")
    ] = None,
    sample: Annotated[
        int, typer.Option(help="without --input: score N shipped SBA test loans")
    ] = 5,
    trust: Annotated[
        Path | None, typer.Option(help="trust store (default: trust.json beside MODEL_DIR)")
    ] = None,
) -> None:
    """Score applicants with a model artifact: probability of default and 350-950 score."""
    from rich.table import Table

    from jointcredit.data.catalog import DataConfig, load_federation
    from jointcredit.data.frames import read_table, validate_frame
    from jointcredit.models.artifact import ArtifactError, load_artifact
    from jointcredit.trust.errors import TrustError
    from jointcredit.trust.store import load_store

    try:
        model = load_artifact(model_dir, load_store(trust or model_dir.parent / "trust.json"))
        if input_file is not None:
            schema = model.card.data_schema
            raw = read_table(input_file)
            if schema.label not in raw.columns:  # applicants have no outcome yet
                raw = raw.assign(**{schema.label: schema.positive})
            x = validate_frame(raw, schema, source=str(input_file)).x
        else:
            fed = load_federation(DataConfig(dataset="sba"))
            x = fed.pooled_test().x.sample(n=sample, random_state=0).reset_index(drop=True)
    except (ArtifactError, DataValidationError, TrustError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    pd_ = model.predict_pd(x)
    scores = model.card.score_scale.score(pd_)
    table = Table(title=f"Scores from {model_dir}")
    shown = list(x.columns[:4])
    for col in ["#", *shown, "PD", "score"]:
        table.add_column(col)
    for i in range(len(x)):
        table.add_row(str(i), *[str(x.iloc[i][c]) for c in shown], f"{pd_[i]:.3f}", str(scores[i]))
    console.print(table)


@app.command()
def sweep(
    grid: Annotated[Path, typer.Option(help="grid file (TOML: seeds, base, grid)")],
    out: Annotated[Path, typer.Option(help="output directory (re-run to resume)")],
    verbose: Annotated[bool, typer.Option(help="show Flower's own logs")] = False,
) -> None:
    """Run a grid of settings x seeds; write results.csv/json, summary.md, plots, report.md."""
    from jointcredit.simulations.sweep import Cell, cells, load_grid, run_sweep
    from jointcredit.simulations.sweep_report import write_outputs

    _quiet_flower(verbose)
    try:
        spec = load_grid(grid)
        total = len(cells(spec, out))  # validates every cell before the first one runs
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    progress = _progress()
    task = progress.add_task("sweep", total=total, status="")

    def on_cell(cell: Cell, status: str) -> None:
        label = ", ".join(f"{k}={v}" for k, v in cell.setting.items())
        if status != "running":
            progress.advance(task)
            console.print(f"{label} seed {cell.seed}: {status}", soft_wrap=True)
        progress.update(task, status=f"{label} seed {cell.seed}: {status}")

    with progress:
        rows = run_sweep(spec, out, on_cell=on_cell, verbose=verbose)
    command = f"jointcredit sweep --grid {grid} --out {out}"
    paths = write_outputs(rows, spec, grid.read_text(encoding="utf-8"), out, command)
    console.print(f"Report: {paths['report']}  results: {paths['csv']}", soft_wrap=True)
    failed = sum(1 for r in rows if r["status"] == "failed")
    if failed:
        err.print(f"[red]{failed} of {len(rows)} runs failed[/red] (see the report)")
        raise typer.Exit(1)


@data_app.command("check")
def data_check(
    directory: Path,
    schema: Annotated[Path | None, typer.Option(help="default DIR/schema.toml")] = None,
    min_rows: Annotated[int, typer.Option(min=1)] = 100,
) -> None:
    """Validate a bring-your-own-data directory without training."""
    from jointcredit.data.catalog import DataConfig, load_federation

    try:
        fed = load_federation(
            DataConfig(dataset=str(directory), schema=str(schema or ""), min_rows=min_rows)
        )
    except DataValidationError as exc:
        err.print(f"[red]data error:[/red] {exc}")
        raise typer.Exit(2) from exc
    for inst, d in fed.institutions.items():
        n = len(d.train) + len(d.test)
        rate = (d.train.y.sum() + d.test.y.sum()) / n
        console.print(f"{inst}: {n} rows, default rate {rate:.3f}")
    console.print(
        f"[green]ok[/green]: {len(fed.ids)} institutions, {len(fed.schema.features)} features"
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
