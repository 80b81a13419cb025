"""`jointcredit binning`: a binned scorecard's bins, WOE and IV, and its points table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jointcredit.cli.output import WideOption, show_table

console = Console()
err = Console(stderr=True)


def binning(
    model_dir: Annotated[Path, typer.Argument(help="a binned scorecard's model directory")],
    trust: Annotated[
        Path | None, typer.Option(help="trust store (default: trust.json beside MODEL_DIR)")
    ] = None,
    feature: Annotated[
        str | None, typer.Option(help="only this feature's attributes (default: every one)")
    ] = None,
    points: Annotated[bool, typer.Option(help="also the points table (scorecard.csv)")] = False,
    wide: WideOption = False,
) -> None:
    """Show the IV table of a binned scorecard (`--model scorecard`): IV per feature, then
    each feature's attributes with counts, bad rate, WOE and IV. It verifies the signed
    artifact first."""
    from jointcredit.models.artifact import BINNING, ArtifactError, load_artifact
    from jointcredit.trust.errors import TrustError
    from jointcredit.trust.store import load_store

    try:
        model = load_artifact(model_dir, load_store(trust or model_dir.parent / "trust.json"))
    except (ArtifactError, TrustError) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    table, card = model.binning, model.card
    if table is None or card.scorecard is None:
        err.print(
            f"[red]error:[/red] {model_dir} is a {card.architecture.kind} model: no {BINNING} "
            "(train with --model scorecard)",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    names = [f.name for f in table.features]
    if feature is not None and feature not in names:
        err.print(f"[red]error:[/red] --feature {feature!r}: not one of {', '.join(names)}")
        raise typer.Exit(2)
    summary = Table(
        title=f"Information value, {table.rows} training rows ({table.bads} bad), fine classing "
        f"up to {table.classing.fine_bins} bins, attributes of at least "
        f"{table.classing.min_bin_share:.0%}"
    )
    for col in ("feature", "type", "monotone", "attributes", "IV"):
        summary.add_column(
            col, overflow="fold", justify="right" if col in ("attributes", "IV") else "left"
        )
    for f in sorted(table.features, key=lambda f: -f.iv):
        summary.add_row(f.name, f.type, f.monotone, str(len(f.bins)), f"{f.iv:.4f}")
    show_table(console, summary, wide)
    for f in table.features:
        if feature is not None and f.name != feature:
            continue
        detail = Table(title=f"{f.name} (IV {f.iv:.4f})")
        for col in ("code", "attribute", "goods", "bads", "share", "bad rate", "WOE", "IV"):
            detail.add_column(
                col, overflow="fold", justify="left" if col == "attribute" else "right"
            )
        for b in f.bins:
            rate = "-" if b.bad_rate is None else f"{b.bad_rate:.3f}"
            detail.add_row(
                str(b.code), b.label, str(b.goods), str(b.bads), f"{b.share:.3f}", rate,
                f"{b.woe:+.4f}", f"{b.iv:.4f}",
            )  # fmt: skip
        show_table(console, detail, wide)
    if points:
        s = card.scorecard
        scale = s.scale
        pts = Table(
            title=f"Points: base {s.base_points:.2f}; {scale.pdo:g} points double the odds, "
            f"{scale.base_score:g} at odds {scale.base_odds:g}:1, clipped to "
            f"{scale.min_score}-{scale.max_score}"
        )
        for col in ("feature", "attribute", "points"):
            pts.add_column(col, overflow="fold", justify="right" if col == "points" else "left")
        for a in s.attributes:
            if feature is None or a.feature == feature:
                pts.add_row(a.feature, a.attribute, f"{a.points:+.2f}")
        show_table(console, pts, wide)
