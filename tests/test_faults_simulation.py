"""Real simulations with simulated faults: rounds that go on without the institutions that
crashed, dropped out or replied late, and a run that stops, loudly, below its minimum."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jointcredit.federation.faults import parse_faults
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import load_artifact
from jointcredit.simulations.simulate import simulate
from jointcredit.trust.store import load_store

pytestmark = pytest.mark.integration

# Five synthetic institutions; seed 1 draws, at 10 % each: nothing in round 1; in round 2
# bank-00 crashes and bank-03 straggles; in round 3 consumer-finance-01 drops out and
# micro-lender-02 straggles (tests/test_faults.py holds the draws themselves to their rates).
TIMEOUT = 8.0
CONFIG: dict[str, Any] = {
    "dataset": "synthetic",
    "institutions": 5,
    "synthetic-rows": 400,
    "model": "logreg",
    "rounds": 3,
    "seed": 1,
    "finetune-epochs": 1,
    "round-timeout": TIMEOUT,
    "join-timeout": 120.0,
}
FAULTS = "crash=0.1,dropout=0.1,straggler=0.1"


def test_the_draws_these_tests_rely_on() -> None:
    plan = parse_faults(FAULTS)
    names = ["bank-00", "consumer-finance-01", "micro-lender-02", "bank-03", "consumer-finance-04"]
    drawn = [{n: f for n in names if (f := plan.fault(1, r, n))} for r in (1, 2, 3)]
    assert drawn == [
        {},
        {"bank-00": "crash", "bank-03": "straggler"},
        {"consumer-finance-01": "dropout", "micro-lender-02": "straggler"},
    ]


def _dropped(record: dict[str, Any], exchange: str) -> dict[str, str]:
    return {d["institution"]: d["reason"] for d in record["dropped"] if d["exchange"] == exchange}


def test_rounds_go_on_without_the_dropped_and_record_why(tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = RunSettings.from_run_config({**CONFIG, "faults": FAULTS, "out-dir": str(out)})
    metrics = simulate(settings, with_baselines=False, with_audit=False).as_json()
    first, second, third = metrics["rounds"]
    assert first["dropped"] == [] and len(first["train_institutions"]) == 5
    train = _dropped(second, "train")
    assert train["bank-00"] == "bank-00 crashed in round 2 (simulated fault)"
    # The straggler was not waited for; its reply turned up in a later exchange, unused.
    assert train["bank-03"].startswith("replied after the round had ended")
    assert train["bank-03"].endswith("not used")
    assert not {"bank-00", "bank-03"} & set(second["train_institutions"])
    assert _dropped(second, "evaluate").keys() >= {"bank-00", "bank-03"}
    train = _dropped(third, "train")
    assert train["consumer-finance-01"] == f"no reply before the timeout ({TIMEOUT:g} s)"
    assert "micro-lender-02" in train
    assert not {"consumer-finance-01", "micro-lender-02"} & set(third["train_institutions"])
    # The signed model records exactly the updates each round averaged.
    manifest = load_artifact(out / "model", load_store(out / "trust.json")).verified.manifest
    accepted = {u["round"]: sorted(u["accepted"]) for u in manifest["updates"]}
    assert accepted == {r["round"]: r["train_institutions"] for r in metrics["rounds"]}
    assert metrics["config"]["faults"] == FAULTS
    assert metrics["federated"]["auc"] > 0.7


def test_below_the_minimum_the_run_stops_loudly_and_keeps_its_checkpoint(tmp_path: Path) -> None:
    """min-institutions 5 of 5: round 2, where bank-00 crashes, cannot go on."""
    out = tmp_path / "out"
    config = {**CONFIG, "rounds": 2, "faults": "crash=0.1", "min-institutions": 5}
    args = [x for k, v in config.items() for x in (f"--{k}", str(v))]
    cmd = [sys.executable, "-m", "jointcredit.cli", "simulate", "--out", str(out),
           "--no-baselines", "--no-audit", *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    message = " ".join(proc.stderr.split())
    assert "round 2 train: 4 valid replies of 5, 5 needed" in message
    assert "replied: bank-03, consumer-finance-01, consumer-finance-04, micro-lender-02" in message
    assert "bank-00: bank-00 crashed in round 2 (simulated fault)" in message
    assert "checkpoints/round-001" in message
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "trust.json"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["round-001"]
    checkpoint = load_artifact(out / "checkpoints" / "round-001", load_store(out / "trust.json"))
    assert checkpoint.verified.manifest["round"] == 1


def test_a_tree_is_grown_by_the_institutions_that_answer_its_first_level(tmp_path: Path) -> None:
    """Seed 8 at 20 %: consumer-finance-01 drops out of tree 2 only."""
    out = tmp_path / "trees"
    settings = RunSettings.from_run_config(
        {
            **{k: v for k, v in CONFIG.items() if k not in ("rounds", "finetune-epochs")},
            "institutions": 4,
            "model": "gbdt",
            "trees": 3,
            "max-depth": 2,
            "personal-trees": 0,
            "seed": 8,
            "faults": "dropout=0.2",
            "out-dir": str(out),
        }
    )
    metrics = simulate(settings, with_baselines=False, with_audit=False).as_json()
    everyone = ["bank-00", "bank-03", "consumer-finance-01", "micro-lender-02"]
    trees = metrics["rounds"]
    assert [t["train_institutions"] for t in trees] == [
        everyone,
        [i for i in everyone if i != "consumer-finance-01"],
        everyone,
    ]
    assert [d["institution"] for d in trees[1]["dropped"]] == ["consumer-finance-01"]
    assert trees[1]["dropped"][0]["reason"].startswith("no reply before the timeout")
    assert trees[0]["dropped"] == trees[2]["dropped"] == []
    # It was asked the first level only; back for tree 3, its margins caught up.
    assert metrics["per_institution"]["consumer-finance-01"]["auc"] is not None
