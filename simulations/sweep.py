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
a non-private cell has no epsilon (the reference runs once: empty in results.csv, null in
results.json, "no DP" in labels).

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

from jointcredit.data.errors import DataValidationError
from jointcredit.federation.metrics import RunMetrics
from jointcredit.federation.recipes import DP_KEYS
from jointcredit.federation.settings import (
    RunSettings,
    SettingsError,
    canonical_keys,
    settings_for_dataset,
    unknown_keys,
)

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
    # The grid values of this cell (what varies); None: a key the cell drops (`_normalise`).
    setting: dict[str, Scalar | None]
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
    unknown = unknown_keys(grid.base, "base") + unknown_keys(grid.grid, "grid")
    if unknown:
        raise ValueError(f"{path}: " + "; ".join(unknown))
    for key, values in grid.grid.items():
        if not values:
            raise ValueError(f"{path}: grid.{key} is an empty list")
    try:  # one spelling per key (learning_rate -> learning-rate), so duplicates show
        grid.base = canonical_keys(grid.base)
        grid.grid = canonical_keys(grid.grid)
    except SettingsError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    clash = {"seed", "out-dir"} & (set(grid.base) | set(grid.grid))
    if clash:
        raise ValueError(f"{path}: set {sorted(clash)} through `seeds` and --out, not the grid")
    return grid


# Keys that mean nothing without DP: a non-private cell drops them, so `privacy = ["none",
# "dp-record"]` x `epsilon = [1, 8]` runs the non-private reference once, not twice.
_DP_KEYS = DP_KEYS
_SECAGG_KEYS = ("secagg-shares", "secagg-threshold", "secagg-clipping-range")


def _normalise(config: dict[str, Scalar]) -> dict[str, Scalar]:
    if config.get("attack", "none") == "none":
        config = {**config, "attack": "none", "attackers": 0}
    privacy = config.get("privacy", "none")
    if privacy in ("none", "secagg"):
        config = {k: v for k, v in config.items() if k not in _DP_KEYS}
    if privacy != "secagg":
        config = {k: v for k, v in config.items() if k not in _SECAGG_KEYS}
    if privacy == "dp-institution":
        # What the recipe gives anyway; kept in the config so that a cell's id (its
        # digest) stays what earlier releases computed and their sweeps still resume.
        config = {"strategy": "fedavg", **config}
    return config


def cells(grid: SweepGrid, out: Path) -> list[Cell]:
    """Every (setting, seed) of the grid, validated for its dataset's institutions (so a cell
    that cannot run fails here, before any cell starts), duplicates removed, in grid order."""
    keys = list(grid.grid)
    found: dict[str, Cell] = {}
    for values in product(*(grid.grid[k] for k in keys)):
        chosen = dict(zip(keys, values, strict=True))
        for seed in grid.seeds:
            # Normalised as a whole: a base key (an attack every cell shares) counts too.
            config = _normalise({**grid.base, **chosen, "seed": seed})
            digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
            cell_out = out / "cells" / digest
            try:
                settings = settings_for_dataset(
                    RunSettings.from_run_config({**config, "out-dir": str(cell_out)})
                )
            except (ValueError, DataValidationError) as exc:
                raise ValueError(f"grid cell {chosen} (seed {seed}): {exc}") from exc
            shown = {k: config.get(k) for k in keys}
            found.setdefault(digest, Cell(digest, shown, seed, settings))
    return list(found.values())


def _run_cell(settings: RunSettings, baselines: bool, verbose: bool) -> float:
    """In a fresh process: one full simulation; returns its wall time."""
    from jointcredit.simulations.simulate import simulate

    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.WARNING)
    started = time.monotonic()
    simulate(settings, with_baselines=baselines)
    return time.monotonic() - started


def _row(cell: Cell, m: RunMetrics | None, status: str, error: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"cell": cell.id, **cell.setting, "seed": cell.seed, "status": status}
    values: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS)
    if m is not None:
        values.update(
            auc=m.federated.auc,
            ks=m.federated.ks,
            brier=m.federated.brier,
            centralized_auc=m.centralized.auc if m.centralized else None,
            local_only_auc=m.local_only.mean_auc if m.local_only else None,
            privacy_setting=m.privacy.setting,
            epsilon_target=m.privacy.epsilon,
            epsilon_spent=m.privacy.epsilon_spent,
            mia_auc=m.privacy.mia_auc,
            mia_tpr_at_1pct_fpr=m.privacy.mia_tpr_at_1pct_fpr,
            attacker_ids=" ".join(m.privacy.attack.attackers),
            rejected_replies=m.security.rejected_replies,
            wall_seconds=m.sweep_wall_seconds,
            **(m.fairness.worst() if m.fairness is not None else {}),
        )
    else:
        values["attacker_ids"] = ""
    return {**row, **values, "error": error}


# What a results row says about its run, after the grid values, seed and status.
RESULT_COLUMNS = (
    "auc",
    "ks",
    "brier",
    "centralized_auc",
    "local_only_auc",
    "privacy_setting",
    "epsilon_target",
    "epsilon_spent",
    "mia_auc",
    "mia_tpr_at_1pct_fpr",
    "attacker_ids",
    "rejected_replies",
    "wall_seconds",
    # Fairness (schemas with protected attributes): the least fair figure over the attributes.
    "min_adverse_impact_ratio",
    "max_demographic_parity_difference",
    "max_equal_opportunity_difference",
    "min_group_auc",
)


def _finished(metrics_path: Path) -> RunMetrics | None:
    """A cell's metrics if it ran to the end: the sweep adds its wall time only after the
    cell's process returned, so a run that died after the ServerApp wrote its part (during
    the baselines or the audit) is run again, as is an unreadable file."""
    if not metrics_path.is_file():
        return None
    try:
        metrics = RunMetrics.read(metrics_path)
    except ValueError:
        return None
    return metrics if metrics.sweep_wall_seconds is not None else None


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
        finished = _finished(metrics_path)
        if finished is not None:
            rows.append(_row(cell, finished, "done"))
            on_cell(cell, "skipped (done before)")
            continue
        on_cell(cell, "running")
        try:
            with ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=1) as pool:
                wall = pool.submit(_run_cell, cell.settings, grid.baselines, verbose).result()
        except Exception as exc:  # one failed cell must not lose the others
            rows.append(_row(cell, None, "failed", f"{type(exc).__name__}: {exc}"))
            on_cell(cell, "failed")
            continue
        metrics = RunMetrics.read(metrics_path)
        metrics.sweep_wall_seconds = round(wall, 2)
        metrics.write(metrics_path)
        rows.append(_row(cell, metrics, "done"))
        on_cell(cell, "done")
    return rows


def iter_settings(
    rows: list[dict[str, Any]], keys: list[str]
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Rows grouped by setting (the grid values), in first-seen order, with a readable label."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        label = setting_label({k: row[k] for k in keys})
        groups.setdefault(label, []).append(row)
    yield from groups.items()


def setting_label(setting: dict[str, Any]) -> str:
    """A setting as people read it: `key=value`, and for the keys a cell dropped (a non-private
    cell's epsilon, a cell without SecAgg+'s shares) why, once."""
    parts = [f"{k}={v}" for k, v in setting.items() if v is not None]
    dropped = [k for k, v in setting.items() if v is None]
    notes = dict.fromkeys("no DP" if k in _DP_KEYS else "no SecAgg+" for k in dropped)
    return ", ".join(parts + list(notes)) or "default"
