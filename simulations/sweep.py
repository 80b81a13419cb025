"""`jointcredit sweep`: a grid of run settings x seeds, each cell a full simulation, then tables,
plots and a report that compare them.

Grid file (TOML)::

    seeds = [1, 2]             # every setting runs once per seed
    baselines = false          # also train centralized / local-only per cell (slower)
    [base]                     # run-config keys every cell shares
    dataset = "sba"
    rounds = 10
    [grid]                     # each key a list of values: every combination runs
    aggregator = ["fedavg", "median", "krum"]
    attack = ["none", "sign-flip"]
    attackers = [2]
    # or: privacy = ["none", "dp-record"], epsilon = [0.5, 1, 2, 4, 8, inf]

Keys are the Flower run-config keys (`[tool.flwr.app.config]` in pyproject.toml); every cell is
validated before the first one runs. A cell without an attack has no attackers (so `attack =
["none", ...]` with `attackers = [2]` does not run a pointless "2 attackers doing nothing"), and
a non-private cell has no epsilon (the reference runs once, shown with "-").

Resumable: a cell's outputs live in OUT/cells/<id>/ (id = digest of its settings); a cell whose
metrics.json is there is not run again. Each cell runs in a fresh process (a federation leaves
Ray and torch state behind; a fresh process also frees its memory).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jointcredit.models.settings import RunSettings
from jointcredit.privacy.robust import assumed_attackers, check_aggregator

Scalar = str | int | float | bool


class SweepGrid(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    baselines: bool = False
    base: dict[str, Scalar] = Field(default_factory=dict)
    grid: dict[str, list[Scalar]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    id: str
    setting: dict[str, Scalar]  # the grid values of this cell (what varies)
    seed: int
    settings: RunSettings


def load_grid(path: Path) -> SweepGrid:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        grid = SweepGrid.model_validate(raw)
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: grid file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ValueError(f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}") from exc
    for key, values in grid.grid.items():
        if not values:
            raise ValueError(f"{path}: grid.{key} is an empty list")
    clash = {"seed", "out-dir"} & (set(grid.base) | set(grid.grid))
    if clash:
        raise ValueError(f"{path}: set {sorted(clash)} through `seeds` and --out, not the grid")
    return grid


# Keys that mean nothing without DP: a non-private cell drops them, so `privacy = ["none",
# "dp-record"]` x `epsilon = [1, 8]` runs the non-private reference once, not twice.
_DP_KEYS = (
    "epsilon",
    "delta",
    "noise-multiplier",
    "max-grad-norm",
    "clipping-norm",
    "dp-clipping",
)
_SECAGG_KEYS = ("secagg-shares", "secagg-threshold", "secagg-clipping-range")


def _normalise(config: dict[str, Scalar]) -> dict[str, Scalar]:
    if config.get("attack", "none") == "none":
        config = {**config, "attack": "none", "attackers": 0}
    privacy = config.get("privacy", "none")
    if privacy in ("none", "secagg"):
        config = {k: v for k, v in config.items() if k not in _DP_KEYS}
    if privacy != "secagg":
        config = {k: v for k, v in config.items() if k not in _SECAGG_KEYS}
    if config.get("privacy") == "dp-institution":
        config = {"strategy": "fedavg", **config}  # Flower accounts only for plain FedAvg
    return config


def cells(grid: SweepGrid, out: Path) -> list[Cell]:
    """Every (setting, seed) of the grid, validated, duplicates removed, in grid order."""
    keys = list(grid.grid)
    found: dict[str, Cell] = {}
    for values in product(*(grid.grid[k] for k in keys)):
        setting = _normalise(dict(zip(keys, values, strict=True)))
        for seed in grid.seeds:
            config = _normalise({**grid.base, **setting, "seed": seed})
            digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
            cell_out = out / "cells" / digest
            try:
                settings = RunSettings.from_run_config({**config, "out-dir": str(cell_out)})
            except ValueError as exc:
                raise ValueError(f"grid cell {setting} (seed {seed}): {exc}") from exc
            shown = {k: setting.get(k, "-") for k in keys}
            found.setdefault(digest, Cell(digest, shown, seed, settings))
    return list(found.values())


def _run_cell(settings: RunSettings, baselines: bool, verbose: bool) -> float:
    """In a fresh process: one full simulation; returns its wall time."""
    from jointcredit.simulations.simulate import simulate

    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.WARNING)
    started = time.monotonic()
    simulate(settings, with_baselines=baselines)
    return time.monotonic() - started


def _check_feasible(settings: RunSettings) -> None:
    """The coordinator's own check (robust rules need enough institutions), made before the
    run when the institution count is set; 0 (every institution of the dataset) is left to it."""
    if settings.institutions > 0 and settings.aggregator != "fedavg":
        assumed = assumed_attackers(settings.assumed_attackers, settings.attackers)
        check_aggregator(settings.aggregator, settings.institutions, assumed)


def _row(
    cell: Cell, metrics: dict[str, Any] | None, status: str, error: str = ""
) -> dict[str, Any]:
    m = metrics or {}
    privacy = m.get("privacy", {})
    security = m.get("security", {})
    return {
        "cell": cell.id,
        **cell.setting,
        "seed": cell.seed,
        "status": status,
        "auc": m.get("federated", {}).get("auc"),
        "ks": m.get("federated", {}).get("ks"),
        "brier": m.get("federated", {}).get("brier"),
        "centralized_auc": (m.get("centralized") or {}).get("auc"),
        "local_only_auc": (m.get("local_only") or {}).get("mean_auc"),
        "privacy_setting": privacy.get("setting"),
        "epsilon_target": privacy.get("epsilon"),
        "epsilon_spent": privacy.get("epsilon_spent"),
        "mia_auc": privacy.get("mia_auc"),
        "mia_tpr_at_1pct_fpr": privacy.get("mia_tpr_at_1pct_fpr"),
        "attacker_ids": " ".join(privacy.get("attack", {}).get("attackers", [])),
        "rejected_replies": security.get("rejected_replies"),
        "wall_seconds": m.get("sweep_wall_seconds"),
        "error": error,
    }


def run_sweep(
    grid: SweepGrid,
    out: Path,
    *,
    on_cell: Callable[[Cell, str], None] = lambda cell, status: None,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Run every cell not already done; returns one result row per cell (failed cells too)."""
    todo = cells(grid, out)
    rows: list[dict[str, Any]] = []
    spawn = multiprocessing.get_context("spawn")
    for cell in todo:
        metrics_path = Path(cell.settings.out_dir) / "metrics.json"
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            rows.append(_row(cell, metrics, "done"))
            on_cell(cell, "skipped (done before)")
            continue
        try:  # a rule that cannot work with this many institutions fails now, not after a start
            _check_feasible(cell.settings)
        except ValueError as exc:
            rows.append(_row(cell, None, "failed", f"{type(exc).__name__}: {exc}"))
            on_cell(cell, "failed")
            continue
        on_cell(cell, "running")
        try:
            with ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=1) as pool:
                wall = pool.submit(_run_cell, cell.settings, grid.baselines, verbose).result()
        except Exception as exc:  # one failed cell must not lose the others
            rows.append(_row(cell, None, "failed", f"{type(exc).__name__}: {exc}"))
            on_cell(cell, "failed")
            continue
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        metrics["sweep_wall_seconds"] = round(wall, 2)
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        rows.append(_row(cell, metrics, "done"))
        on_cell(cell, "done")
    return rows


def iter_settings(
    rows: list[dict[str, Any]], keys: list[str]
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Rows grouped by setting (the grid values), in first-seen order, with a readable label."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        label = ", ".join(f"{k}={row[k]}" for k in keys) or "default"
        groups.setdefault(label, []).append(row)
    yield from groups.items()
