"""`jointcredit simulate`: validate the data, run the federation, add the baselines, report.

Output directory (contract)::

    OUT/model/        the model artifact (weights, agreed preprocessing, model card)
    OUT/metrics.json  federated, centralized, local_only, per_institution, rounds, config,
                      privacy (setting, epsilon spent, membership-inference audit)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from jointcredit.data.catalog import load_federation, pinned
from jointcredit.models.artifact import load_artifact
from jointcredit.models.settings import RunSettings
from jointcredit.simulations import baselines
from jointcredit.simulations.audit import membership_audit
from jointcredit.simulations.engine import run_simulation
from jointcredit.trust.keyset import create_key_set
from jointcredit.trust.store import load_store


def simulate(
    settings: RunSettings, *, with_baselines: bool = True, with_audit: bool = True
) -> dict[str, Any]:
    """Run everything; returns the metrics also written to OUT/metrics.json."""
    started = time.monotonic()
    # Every institution's file is validated before any training starts.
    fed = load_federation(settings.data)
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = out / "metrics.json"
    if stale.exists():
        stale.unlink()  # a failed run must not leave the previous run's results looking current
    run_settings = settings.model_copy(
        update={"institutions": len(fed.ids), "min_nodes": len(fed.ids), "out_dir": str(out)}
    )
    # The in-process ServerApp's central evaluation reuses the splits validated above.
    with pinned(run_settings.data, fed):
        if settings.keys_dir or settings.trust_file:
            run_simulation(
                run_settings, num_nodes=len(fed.ids), cpus_per_client=os.cpu_count() or 1
            )
        else:
            # Fresh keys per run, outside OUT and gone afterwards; OUT/trust.json keeps the
            # public half (written by the ServerApp).
            with tempfile.TemporaryDirectory(prefix="jointcredit-keys-") as keys_dir:
                create_key_set(Path(keys_dir), list(fed.ids), federation="simulation")
                run_simulation(
                    run_settings.model_copy(update={"keys_dir": keys_dir}),
                    num_nodes=len(fed.ids),
                    cpus_per_client=os.cpu_count() or 1,
                )
    sim_seconds = time.monotonic() - started
    metrics_path = out / "metrics.json"
    if not metrics_path.is_file():
        raise RuntimeError(f"the federation finished without writing {metrics_path}")
    metrics: dict[str, Any] = json.loads(metrics_path.read_text(encoding="utf-8"))
    metrics["dataset"] = fed.description

    final = load_artifact(out / "model", load_store(out / "trust.json"))
    if with_baselines:
        t = time.monotonic()
        spec = final.spec
        metrics["centralized"], metrics["local_only"] = baselines.both(fed, spec, run_settings)
        for inst, row in metrics["per_institution"].items():
            row["auc_local_only"] = metrics["local_only"]["per_institution"][inst]["auc_own"]
        metrics["timing"]["baselines_seconds"] = round(time.monotonic() - t, 3)
    if with_audit:
        audit = membership_audit(fed, final.spec, final.model, run_settings)
        metrics["privacy"].update(audit)
        metrics["timing"]["audit_seconds"] = audit["mia"]["seconds"]
    else:
        metrics["privacy"].update({"mia_auc": None, "mia_tpr_at_1pct_fpr": None})
    metrics["timing"]["simulation_seconds"] = round(sim_seconds, 3)
    metrics["timing"]["total_seconds"] = round(time.monotonic() - started, 3)
    tmp = metrics_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    tmp.replace(metrics_path)
    return metrics
