"""Robust aggregation against a poisoning institution: Flower's robust strategies as
`build_strategy` configures them, fed real local updates (our training loop on synthetic
institutions) with one attacker poisoning its update as `privacy.robust` does; plus the CLI
wiring end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.federation.settings import RunSettings
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.preprocessing import agree, summarize
from jointcredit.models.training import TrainConfig, predict_pd, train
from jointcredit.privacy.robust import attacker_ids, poison_update
from jointcredit.server.strategy import build_strategy

ROUNDS = 8


@pytest.fixture(scope="module")
def institutions() -> dict[str, Any]:
    fed = load_federation(DataConfig(dataset="synthetic", institutions=7, synthetic_rows=600))
    summaries = [
        summarize(d.train.x, d.train.y, fed.schema, max_categories=64, min_count=5)
        for d in fed.institutions.values()
    ]
    spec = agree(summaries, fed.schema, max_categories=64, min_count=5, standardize_indicators=True)
    test = fed.pooled_test()
    return {
        "train": {i: (spec.transform(d.train.x), d.train.y) for i, d in fed.institutions.items()},
        "x_test": spec.transform(test.x),
        "y_test": test.y,
        "n_features": spec.n_outputs,
    }


def _federate(data: dict[str, Any], aggregator: str, attack: str, attackers: int = 1) -> float:
    """ROUNDS rounds through the strategy's own aggregate_train; the pooled test AUC."""
    settings = RunSettings.model_validate(
        {"aggregator": aggregator, "attack": attack, "attackers": attackers, "strategy": "fedavg"}
    )
    common = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}
    strategy = build_strategy(settings, len(data["train"]), common)
    bad = set(attacker_ids(list(data["train"]), attackers, settings.seed)) if attack else set()
    model = build_model(architecture("logreg", data["n_features"]), seed=0)
    for r in range(1, ROUNDS + 1):
        global_state = {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}
        replies = []
        for node, (inst, (x, y)) in enumerate(sorted(data["train"].items())):
            local = build_model(architecture("logreg", data["n_features"]))
            local.load_state_dict(model.state_dict())
            label_flip = inst in bad and attack == "label-flip"
            cfg = TrainConfig.from_settings(settings, seed=r * 100 + node, server_round=r)
            train(local, x, 1 - y if label_flip else y, cfg)
            state = {k: v.detach().numpy() for k, v in local.state_dict().items()}
            if inst in bad:
                state = poison_update(global_state, state, attack, settings.attack_scale)  # type: ignore[arg-type]
            content = RecordDict(
                {
                    "arrays": ArrayRecord(
                        OrderedDict((k, torch.from_numpy(v)) for k, v in state.items())
                    ),
                    "metrics": MetricRecord({"num-examples": len(y)}),
                }
            )
            replies.append(Message(content, dst_node_id=node + 1, message_type=MessageType.TRAIN))
        arrays, _ = strategy.aggregate_train(r, replies)
        assert arrays is not None
        model.load_state_dict(arrays.to_torch_state_dict())
    auc = risk_metrics(data["y_test"], predict_pd(model, data["x_test"])).auc
    assert auc is not None
    return float(auc)


@pytest.mark.usefixtures("task_identity")
def test_robust_aggregators_hold_where_fedavg_breaks(institutions: dict[str, Any]) -> None:
    clean = _federate(institutions, "fedavg", "none", attackers=0)
    assert clean > 0.75
    assert _federate(institutions, "fedavg", "sign-flip") < clean - 0.1  # the attack bites
    for aggregator in ("median", "trimmed", "krum", "multikrum", "bulyan"):
        held = _federate(institutions, aggregator, "sign-flip")
        assert held > clean - 0.03, (aggregator, held, clean)


def test_attackers_are_drawn_by_seed_and_rules_check_their_quorum() -> None:
    ids = [f"bank-{c}" for c in "abcdefg"]
    assert attacker_ids(ids, 2, 42) == attacker_ids(list(reversed(ids)), 2, 42)
    assert attacker_ids(ids, 2, 42) != attacker_ids(ids, 2, 43) or attacker_ids(
        ids, 2, 44
    ) != attacker_ids(ids, 2, 42)
    RunSettings(aggregator="bulyan", institutions=7, assumed_attackers=1)
    with pytest.raises(ValueError, match="bulyan against 2 attacker"):
        RunSettings(aggregator="bulyan", institutions=7, assumed_attackers=2)
    with pytest.raises(ValueError, match="krum"):
        RunSettings(aggregator="krum", institutions=4, assumed_attackers=1)


@pytest.mark.e2e
def test_cli_attack_and_robust_rule_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "jointcredit.cli", "simulate", "--dataset", "synthetic",
           "--institutions", "7", "--synthetic-rows", "600", "--rounds", "4", "--no-baselines",
           "--attackers", "1", "--attack", "scale", "--aggregator", "median",
           "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Aggregation: median; attack: scale by" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    privacy = metrics["privacy"]
    assert privacy["aggregator"] == "median"
    assert privacy["attack"]["kind"] == "scale" and len(privacy["attack"]["attackers"]) == 1
    assert metrics["federated"]["auc"] > 0.75
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert manifest["privacy"]["aggregator"] == "median"
    # An attack needs its attackers, and a rule its quorum: refused before any training.
    bad = subprocess.run([*cmd[:-2], "--out", str(tmp_path / "x"), "--attackers", "0"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "attackers = 0 with attack = scale" in bad.stderr
