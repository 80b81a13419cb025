"""The headline comparison: every model on the SBA lenders, random and out-of-time splits,
federated against centralized and local-only. Written as a docs/BENCHMARKS.md section and,
between the `headline` markers, into README.md, from the runs `make bench` just made.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from jointcredit.federation.metrics import RunMetrics

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = "headline: every model on the sba sample, 20 lenders, random and out-of-time splits"
README_START = "<!-- headline:start (written by make bench) -->"
README_END = "<!-- headline:end -->"

DEFAULT_RUN = "default run (README): sba sample, 20 lenders, the default model (gbdt, 40 trees)"
GBDT_100 = "gbdt: sba sample, 20 lenders, 100 trees of depth 6"
# (row, split) -> the benchmark case that ran it (scripts/bench.py's CASES); a row names
# its model first.
RUNS: dict[tuple[str, str], str] = {
    ("logreg", "random"): "logreg: sba sample, 20 lenders x 20 rounds",
    ("logreg", "time"): "out of time: sba sample, 20 lenders x 20 rounds, logreg, --split time",
    ("mlp", "random"): "mlp: sba sample, 20 lenders x 20 rounds",
    ("mlp", "time"): "mlp out of time: sba sample, 20 lenders x 20 rounds, --split time",
    ("scorecard", "random"): "binned scorecard: sba sample, 20 lenders x 20 rounds",
    ("scorecard", "time"): (
        "binned scorecard out of time: sba sample, 20 lenders x 20 rounds, --split time"
    ),
    ("gbdt (default: 40 trees, depth 5)", "random"): DEFAULT_RUN,
    ("gbdt (default: 40 trees, depth 5)", "time"): (
        "gbdt out of time: sba sample, 20 lenders, default trees, --split time"
    ),
    ("gbdt (100 trees, depth 6)", "random"): GBDT_100,
}
CENTRAL = {
    "logreg": "the same model, pooled rows",
    "mlp": "the same model, pooled rows",
    "scorecard": "the same scorecard, pooled rows, the federation's bins",
    "gbdt": "XGBoost `hist` on the pooled rows' federation bin codes, same trees/depth/"
    "learning rate",
}


def _f(v: float | None, d: int = 3) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def table(runs: dict[str, Path]) -> str:
    """The Markdown table; a run that is missing is an error (the headline is all or none)."""
    lines = [
        "| model | split | federated AUC / KS / Brier | centralized AUC / KS / Brier | "
        "local-only AUC / KS / Brier | run wall s |",
        "|---|---|---|---|---|---:|",
    ]
    for (row, split), case in RUNS.items():
        out = runs[case]
        m = RunMetrics.read(out / "metrics.json")
        model = row.split()[0]
        if m.config.get("model") != model or m.config.get("split", "random") != split:
            raise ValueError(f"{out}: not a {model} run on the {split} split")
        wall = json.loads((out / "bench.json").read_text())["wall_seconds"]
        fed, cen, lo = m.federated, m.centralized, m.local_only
        if cen is None or lo is None:
            raise ValueError(f"{out}: a headline run needs its baselines")
        lines.append(
            f"| {row} | {split} | **{_f(fed.auc)}** / {_f(fed.ks)} / {_f(fed.brier)} | "
            f"{_f(cen.auc)} / {_f(cen.ks)} / {_f(cen.brier)} | "
            f"{_f(lo.mean_auc)} / {_f(lo.mean_ks)} / {_f(lo.mean_brier)} | {wall:.0f} |"
        )
    return "\n".join(lines) + "\n"


def headline_section(runs: dict[str, Path], readme: Path = ROOT / "README.md") -> str:
    body = table(runs)
    about = "; ".join(f"{k}: {v}" for k, v in CENTRAL.items())
    text = f"""### {HEADLINE}

From the benchmark's own runs above (measured up to {datetime.now(UTC):%Y-%m-%d %H:%M} UTC):
every model with its default recipe, 20 lenders, pooled test split; `time` trains each lender
on its earlier loans and tests on its latest ones. Centralized: {about}. Local-only: each
lender's own model, mean over lenders. Wall time: the whole `jointcredit simulate` run,
baselines included.

{body}"""
    _write_readme(readme, body)
    return text


def _write_readme(readme: Path, body: str) -> None:
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{readme}: no {README_START} ... {README_END} block")
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(pattern.sub(lambda _: f"{README_START}\n{body}{README_END}", text), "utf-8")
    tmp.replace(readme)
