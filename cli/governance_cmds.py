"""`jointcredit report` (the validation report of a run) and `jointcredit promote` (the signed
promotion record, only when every gate passes): docs/GOVERNANCE.md."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jointcredit.cli.output import show_table
from jointcredit.cli.pinning import KeyIdOption, TrustAnyOption, coordinator_pin
from jointcredit.cli.trust_cmds import PassphraseEnv

console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def promote(
    model_dir: Annotated[Path, typer.Argument(help="the run's final model, e.g. OUT/model")],
    gates: Annotated[Path, typer.Option(help="gates TOML (docs/examples/gates.toml)")],
    key: Annotated[Path, typer.Option(help="the coordinator's private key (signs the record)")],
    trust: Annotated[
        Path | None, typer.Option(help="trust store (default: trust.json beside MODEL_DIR)")
    ] = None,
    metrics: Annotated[
        Path | None, typer.Option(help="the run's metrics (default: metrics.json beside MODEL_DIR)")
    ] = None,
    by: Annotated[str, typer.Option(help="who promotes, for the record (a name or role)")] = "",
    passphrase_env: PassphraseEnv = None,
    coordinator_key_id: KeyIdOption = None,
    trust_any_coordinator: TrustAnyOption = False,
) -> None:
    """Check the run's figures against the gates; only when every gate passes, write the
    coordinator-signed promotion record (MODEL_DIR/promotion.json). Exit 1 naming each failed
    gate; exit 2 on bad input."""
    from jointcredit.models.artifact import ArtifactError, load_artifact
    from jointcredit.models.gates import (
        GatesError,
        check_gates,
        parse_gates,
        read_run,
        unsigned_differences,
    )
    from jointcredit.models.promotion import write_promotion
    from jointcredit.trust import keys
    from jointcredit.trust.errors import TrustError
    from jointcredit.trust.store import load_store

    trust_file = trust or model_dir.parent / "trust.json"
    metrics_file = metrics or model_dir.parent / "metrics.json"
    pin = coordinator_pin(trust_file, coordinator_key_id, trust_any_coordinator)
    try:
        store = load_store(trust_file, pin=pin)
        model = load_artifact(model_dir, store)
        model.require_final(False)
    except (TrustError, ArtifactError) as exc:
        raise _fail(f"model does not verify: {exc}") from exc
    try:
        gates_text = gates.read_text(encoding="utf-8")
        thresholds = parse_gates(gates_text, str(gates))
    except (OSError, UnicodeDecodeError, GatesError) as exc:
        raise _fail(str(exc)) from exc
    try:
        metrics_bytes = metrics_file.read_bytes()
        run = read_run(metrics_file)
    except (OSError, ValueError) as exc:
        raise _fail(f"{metrics_file}: not a run's metrics ({exc})") from exc
    if run.metrics.run_id != model.run_id and model.run_id is not None:
        raise _fail(
            f"{metrics_file} is of run {run.metrics.run_id}, the model of run {model.run_id}"
        )
    edited = unsigned_differences(model.verified.manifest, json.loads(metrics_bytes))
    if edited:
        raise _fail(f"{metrics_file} disagrees with the signed model: {'; '.join(edited)}")
    results = check_gates(run, thresholds)
    table = Table(title=f"Gates for {model_dir} ({gates})")
    for col in ("gate", "threshold", "value", "result", "what"):
        table.add_column(col, justify="right" if col in ("threshold", "value") else "left")
    for r in results:
        value = "not measured" if r.value is None else f"{r.value:.4g}"
        verdict = "[green]pass[/green]" if r.passed else "[red]FAIL[/red]"
        table.add_row(r.name, f"{r.threshold:g}", value, verdict, escape(r.detail))
    show_table(console, table)
    failed = [r for r in results if not r.passed]
    if failed:
        for r in failed:
            value = "not measured" if r.value is None else f"{r.value:.4g}"
            err.print(
                f"[red]refused[/red]: gate {r.name} failed: {value} against {r.threshold:g} "
                f"({escape(r.detail)})",
                soft_wrap=True,
            )
        raise typer.Exit(1)
    try:
        signer = keys.load_private_key(key, keys.passphrase_from_env(passphrase_env))
    except (OSError, ValueError, TrustError) as exc:
        raise _fail(f"--key {key}: {exc}") from exc
    record = {
        "model_manifest_sha256": model.verified.manifest_sha256,
        "run_id": model.run_id,
        "gates_file": gates.name,
        "gates_toml": gates_text,
        "gates_sha256": hashlib.sha256(gates_text.encode()).hexdigest(),
        "metrics_sha256": hashlib.sha256(metrics_bytes).hexdigest(),
        "gates": [r.as_json() for r in results],
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "promoted_by": by,
    }
    try:
        path = write_promotion(model_dir, record, signer, store)
    except (OSError, TrustError) as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"[green]promoted[/green]: {path} (model {model.verified.manifest_sha256[:16]}, signed by "
        f"{keys.key_id(signer)})",
        soft_wrap=True,
    )


def report(
    run_dir: Annotated[Path, typer.Argument(help="a run's output directory (OUT)")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="the HTML page (default: RUN_DIR/report.html); the "
            "Markdown goes beside it (.md, figures in <name>_files/)"
        ),
    ] = None,
    trust: Annotated[
        Path | None, typer.Option(help="trust store (default: RUN_DIR/trust.json)")
    ] = None,
    coordinator_key_id: KeyIdOption = None,
    trust_any_coordinator: TrustAnyOption = False,
) -> None:
    """Write the model-validation report of a run: one self-contained HTML page (figures
    embedded, nothing fetched) and the same in Markdown."""
    from jointcredit.models.gates import read_run
    from jointcredit.simulations.report_document import to_html, to_markdown
    from jointcredit.simulations.validation_report import build
    from jointcredit.trust.errors import TrustError
    from jointcredit.trust.files import UnsafeFile, replace_file
    from jointcredit.trust.store import load_store

    metrics_file = run_dir / "metrics.json"
    try:
        run = read_run(metrics_file)
    except (OSError, ValueError) as exc:
        raise _fail(f"{metrics_file}: not a run's metrics ({exc})") from exc
    trust_file = trust or run_dir / "trust.json"
    pin = coordinator_pin(trust_file, coordinator_key_id, trust_any_coordinator)
    try:
        store = load_store(trust_file, pin=pin)
    except TrustError as exc:
        raise _fail(f"trust store: {exc}") from exc
    html_file = out or run_dir / "report.html"
    sections = build(run, run_dir / "model", store)
    title = f"Model validation report: run {run.metrics.run_id}"
    figure_dir = f"{html_file.stem}_files"
    markdown, figures = to_markdown(title, sections, figure_dir)
    try:
        (html_file.parent / figure_dir).mkdir(parents=True, exist_ok=True)
        for name, data in figures.items():
            replace_file(html_file.parent / name, data, mode=0o644)
        replace_file(html_file.with_suffix(".md"), markdown.encode(), mode=0o644)
        replace_file(html_file, to_html(title, sections).encode(), mode=0o644)
    except (OSError, UnsafeFile) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"wrote {html_file} and {html_file.with_suffix('.md')}", soft_wrap=True)
