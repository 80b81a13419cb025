"""`jointcredit score` and `jointcredit decide`: applicants scored and decided by a verified
model without starting the service, for any model (applicants drawn from the model's own
preprocessing, or `--input`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from jointcredit.cli.output import JsonOption, WideOption, print_json, show_table
from jointcredit.cli.pinning import KeyIdOption, TrustAnyOption, coordinator_pin

console = Console()
err = Console(stderr=True)


def _model(
    model_dir: Path,
    trust: Path | None,
    *,
    checked: bool,
    pin: tuple[str | None, bool],
    allow_checkpoint: bool = False,
) -> Any:
    """The verified final model (a checkpoint only with `allow_checkpoint`; and, `checked`,
    the start-up checks passed), announced on stderr; exit 2 naming why not."""
    from jointcredit.models.artifact import ArtifactError, load_artifact
    from jointcredit.service.loader import StartupError, check_model
    from jointcredit.trust.errors import TrustError
    from jointcredit.trust.store import load_store

    trust_file = trust or model_dir.parent / "trust.json"
    key_id = coordinator_pin(trust_file, *pin)
    try:
        model = load_artifact(model_dir, load_store(trust_file, pin=key_id))
        model.require_final(allow_checkpoint)
        if checked:
            check_model(model)
    except (ArtifactError, TrustError, StartupError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    err.print(f"using {model.describe()}", soft_wrap=True)
    return model


def _applicants(model: Any, input_file: Path | None, sample: int, seed: int) -> Any:
    """The applicants to score, as a frame of the model's features: `--input`'s rows, checked
    against the model's schema, or `sample` drawn from the model's own preprocessing."""
    import pandas as pd

    from jointcredit.data.errors import DataValidationError
    from jointcredit.data.files import read_table
    from jointcredit.data.frames import validate_frame
    from jointcredit.service.applicants import sample as draw

    schema = model.card.data_schema
    if input_file is None:
        names = [f.name for f in model.spec.features]
        return pd.DataFrame(draw(model.spec, schema.features, sample, seed), columns=names)
    try:
        raw = read_table(input_file)
        if schema.label not in raw.columns:  # applicants have no outcome yet
            raw = raw.assign(**{schema.label: schema.positive})
        return validate_frame(raw, schema, source=str(input_file), with_time=False).x
    except DataValidationError as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


def _records(x: Any) -> list[dict[str, Any]]:
    """Frame rows as the decider takes them: None for missing."""
    import math

    return [
        {str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in x.to_dict(orient="records")
    ]


InputFile = Annotated[
    Path | None,
    typer.Option("--input", help="CSV/Parquet of applicants (the model's schema features)"),
]
SampleOption = Annotated[
    int,
    typer.Option(
        min=1,
        help="without --input: this many applicants, drawn from the model's own "
        "preprocessing (any model)",
    ),
]
TrustOption = Annotated[
    Path | None, typer.Option(help="trust store (default: trust.json beside MODEL_DIR)")
]
LanguageOption = Annotated[
    str, typer.Option(help="language of the reasons shown: en (English) or zh (Chinese)")
]
AllowCheckpoint = Annotated[
    bool, typer.Option(help="use a round's checkpoint, not only a run's final model")
]


def _language(language: str) -> Any:
    """`--language` checked: exit 2 naming the option and the languages there are."""
    from jointcredit.service.languages import LANGUAGES

    if language not in LANGUAGES:
        err.print(
            f"[red]error:[/red] --language {language!r}: expected one of {', '.join(LANGUAGES)}",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    return language


def score(
    model_dir: Annotated[Path, typer.Argument(help="a model directory (OUT/model)")],
    input_file: InputFile = None,
    sample: SampleOption = 5,
    trust: TrustOption = None,
    language: LanguageOption = "en",
    allow_checkpoint: AllowCheckpoint = False,
    coordinator_key_id: KeyIdOption = None,
    trust_any_coordinator: TrustAnyOption = False,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:  # fmt: skip
    """Score applicants with a model artifact: probability of default and 350-950 score;
    below the table, why any applicant is outside the model's training data (in
    `--language`)."""
    from rich.table import Table

    from jointcredit.service.coverage import Coverage
    from jointcredit.service.policy import OutsideTraining

    lang = _language(language)
    pin = (coordinator_key_id, trust_any_coordinator)
    model = _model(model_dir, trust, checked=False, pin=pin, allow_checkpoint=allow_checkpoint)
    x = _applicants(model, input_file, sample, seed=0)
    pd_ = model.predict_pd(x)
    scores = model.card.score_scale.score(pd_)
    coverage = Coverage(
        model.spec,
        model.card.data_schema.features,
        OutsideTraining(),
        bins=model.bins,
        spans=model.spans,
    )
    rows = _records(x)
    unseen, beyond = coverage.many({c: [r[c] for r in rows] for c in x.columns}, len(x))
    ids, entries = coverage.explain(unseen, beyond, 0, lang)
    if as_json:
        from jointcredit.service.loader import model_info

        print_json({
            "model": model_info(model).model_dump(),
            "language": lang,
            "applicants": [
                {"index": i, "applicant": rows[i], "probability_of_default": float(pd_[i]),
                 "score": int(scores[i]), "unseen_values": unseen[i], "out_of_range": beyond[i],
                 "outside_training": [entries[k]["text"] for k in ids[i]]}
                for i in range(len(x))
            ],
        })  # fmt: skip
        return
    table = Table(title=f"Scores from {model_dir}")
    shown = list(x.columns[:4])
    for col in ["#", *shown, "PD", "score", "outside training"]:
        table.add_column(col, overflow="fold")
    for i in range(len(x)):
        outside = ", ".join([*unseen[i], *beyond[i]]) or "-"
        table.add_row(
            str(i), *[str(x.iloc[i][c]) for c in shown], f"{pd_[i]:.3f}", str(scores[i]), outside
        )
    show_table(console, table, wide)
    for i, row in enumerate(ids):
        for k in row:
            console.print(f"#{i}: {entries[k]['text']}", soft_wrap=True)


def decide(
    model_dir: Annotated[Path, typer.Argument(help="signed model directory, e.g. OUT/model")],
    trust: TrustOption = None,
    policy: Annotated[Path | None, typer.Option(help="policy TOML (default: shipped)")] = None,
    sample: SampleOption = 5,
    input_file: InputFile = None,
    language: LanguageOption = "en",
    allow_checkpoint: AllowCheckpoint = False,
    coordinator_key_id: KeyIdOption = None,
    trust_any_coordinator: TrustAnyOption = False,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:  # fmt: skip
    """Eligibility decisions for a few applicants, without starting the service (reasons in
    `--language`, when the policy has it). Not audited: the service's decisions are."""
    from rich.table import Table

    from jointcredit.service.decide import Decider
    from jointcredit.service.policy import load_policy, show_value

    lang = _language(language)
    pin = (coordinator_key_id, trust_any_coordinator)
    model = _model(model_dir, trust, checked=True, pin=pin, allow_checkpoint=allow_checkpoint)
    try:
        decider = Decider(model, load_policy(policy))
    except ValueError as exc:
        err.print(f"[red]error:[/red] policy: {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    applicants = _records(_applicants(model, input_file, sample, seed=1))
    n = len(applicants)
    table = decider.decide(applicants, [{}] * n, [None] * n, lang)
    if as_json:
        print_json(_decisions_json(model, decider, table, applicants))
        return
    title = f"Eligibility decisions ({decider.policy.version}, reasons in {table.language})"
    out = Table(title=title)
    shown = decider.features[:2]
    for col in ("#", *shown, "PD", "score", "decision", "first reason"):
        out.add_column(col, overflow="fold")
    for i, a in enumerate(applicants):
        reasons = table.reasons(i)
        out.add_row(
            str(i), *[show_value(a[f]) for f in shown], f"{table.probability_of_default[i]:.3f}",
            str(table.score[i]), table.decision[i], reasons[0]["text"] if reasons else "-",
        )  # fmt: skip
    show_table(console, out, wide)
    for line in _not_evaluated(decider, table):
        console.print(line, soft_wrap=True)


def _decisions_json(model: Any, decider: Any, table: Any, applicants: list[Any]) -> Any:
    """Each decision as the service's `DecisionOut` (ids `local-N`: nothing is audited
    here), with its applicant."""
    from datetime import UTC, datetime

    from jointcredit.service.loader import model_info

    info = model_info(model).model_dump()
    now = datetime.now(UTC).isoformat()
    decisions = [
        {"applicant": a, **table.render(i, decision_id=f"local-{i}", reference=None, model=info,
                                        policy_version=decider.policy.version, created_at=now)}
        for i, a in enumerate(applicants)
    ]  # fmt: skip
    return {"decisions": decisions, "notes": _not_evaluated(decider, table)}


def _not_evaluated(decider: Any, table: Any) -> list[str]:
    """The rules no decision evaluated, and why: a field this model does not have, or a context
    signal these applicants do not carry."""
    codes = dict.fromkeys(c for k in range(len(table)) for c in table.rules_not_evaluated(k))
    if not codes:
        return []
    absent = decider.rules.absent
    lines = ["rules not evaluated:"]
    for code in codes:
        rule = next(r for r in decider.policy.rules if r.code == code)
        if code in absent:
            why = f"this model has no {', '.join(absent[code])}"
        else:
            signals = [f for f in rule.when if f in decider.policy.context]
            why = f"context not given ({', '.join(signals)})"
        lines.append(f"  {code}: {why}")
    return lines
