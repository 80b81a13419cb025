"""Institutions that drop out: the AUC a run keeps when a share of lenders is gone each round.

    nice -n 5 python scripts/reliability_faults.py                 # logreg and gbdt
    nice -n 5 python scripts/reliability_faults.py --models logreg --below-minimum

On the shipped SBA sample (20 lenders), each model with its default settings runs twice: fault
free, and with `faults = dropout=SHARE` (each lender, in each round - each tree for gbdt -
independently gone with that probability, drawn by seed). Simulated dropouts cost the
coordinator a full `round-timeout` per exchange, so the runs set a short one (and a longer
`join-timeout` for the first queries, which load the data). With independent draws the share
gone in a round varies around SHARE; `--min-valid-fraction` says how many must reply.
`--below-minimum` adds the dropout run at the default quorum (0.5), which stops at the first
round below it: the script shows its message and what OUT kept.

Prints a table and writes OUT/reliability_faults.json: per run the pooled test AUC, the wall
time, per round the lenders dropped (planned by the fault plan, and any that were merely slow).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from jointcredit.data.catalog import resolve
from jointcredit.federation.faults import parse_faults
from jointcredit.federation.settings import RunSettings
from jointcredit.simulations.simulate import simulate


def _settings(args: argparse.Namespace, model: str, out: Path, **extra: Any) -> RunSettings:
    return RunSettings.from_run_config(
        {
            "dataset": "sba",
            "model": model,
            "seed": args.seed,
            "out-dir": str(out),
            "round-timeout": args.round_timeout,
            "join-timeout": args.join_timeout,
            **extra,
        }
    )


def _run(settings: RunSettings) -> dict[str, Any]:
    started = time.monotonic()
    try:
        metrics = simulate(settings, with_baselines=False, with_audit=False)
    except Exception as exc:  # the below-minimum run: its message is the result
        out = Path(settings.out_dir)
        kept = sorted(p.name for p in (out / "checkpoints").glob("round-*")) if out.is_dir() else []
        return {
            "stopped": f"{type(exc).__name__}: {exc}",
            "kept": kept,
            "seconds": round(time.monotonic() - started, 1),
        }
    plan = parse_faults(settings.faults)
    rounds: list[dict[str, Any]] = []
    for r in metrics.rounds:
        planned = {
            i for i in metrics.institutions if plan.fault(settings.seed, r.round, i) is not None
        }
        gone = {d.institution for d in r.dropped}
        rounds.append(
            {
                "round": r.round,
                "dropped": len(gone),
                "planned": len(planned),
                "unplanned": sorted(gone - planned),
                "trained": len(r.train_institutions or []),
            }
        )
    return {
        "auc": metrics.federated.auc,
        "ks": metrics.federated.ks,
        "brier": metrics.federated.brier,
        "seconds": round(time.monotonic() - started, 1),
        "rounds": rounds,
        "mean_dropped": round(sum(int(x["dropped"]) for x in rounds) / len(rounds), 2),
        "max_dropped": max(int(x["dropped"]) for x in rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/reliability-faults"))
    parser.add_argument("--models", default="logreg,gbdt")
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--round-timeout", type=float, default=15.0)
    parser.add_argument("--join-timeout", type=float, default=300.0)
    parser.add_argument("--min-valid-fraction", type=float, default=0.4)
    parser.add_argument("--below-minimum", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    n = len(resolve(RunSettings(dataset="sba").data).ids)
    faults = f"dropout={args.dropout:g}"
    results: dict[str, Any] = {
        "lenders": n,
        "faults": faults,
        "seed": args.seed,
        "round_timeout": args.round_timeout,
        "min_valid_fraction": args.min_valid_fraction,
        "runs": {},
    }
    for model in args.models.split(","):
        runs: dict[str, RunSettings] = {
            f"{model} fault-free": _settings(args, model, args.out / f"{model}-fault-free"),
            f"{model} {faults}": _settings(
                args,
                model,
                args.out / f"{model}-dropout",
                faults=faults,
                **{"min-valid-fraction": args.min_valid_fraction},
            ),
        }
        if args.below_minimum:
            runs[f"{model} {faults}, quorum 0.5"] = _settings(
                args, model, args.out / f"{model}-below-minimum", faults=faults
            )
        for name, settings in runs.items():
            shutil.rmtree(settings.out_dir, ignore_errors=True)
            print(f"running {name} ...", flush=True)
            results["runs"][name] = result = _run(settings)
            print(f"  {json.dumps({k: v for k, v in result.items() if k != 'rounds'})}")
            (args.out / "reliability_faults.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'run':<36} {'AUC':>7} {'dropped/round':>14} {'seconds':>8}")
    for name, r in results["runs"].items():
        if "stopped" in r:
            print(f"{name:<36} stopped: {r['stopped'][:160]}")
            continue
        drop = f"{r['mean_dropped']:.1f} (max {r['max_dropped']})"
        print(f"{name:<36} {r['auc']:>7.4f} {drop:>14} {r['seconds']:>8.0f}")


if __name__ == "__main__":
    main()
