"""Institution-level DP: noise calibrated against an independent accountant, Flower's DP
wrapper configured as the accountant requires, unclipped updates refused when institutions
clip, and a federation whose enforced budget stops it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
)
from grid_helpers import AnsweringGrid
from opacus.accountants.analysis import rdp as opacus_rdp

from jointcredit.federation.settings import RunSettings
from jointcredit.privacy.institution_dp import calibrate_noise, epsilon_after
from jointcredit.server.grid import InstitutionGrid
from jointcredit.server.strategy import build_strategy

DELTA = 1e-5
COMMON = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}


def opacus_epsilon(noise: float, releases: int) -> float:
    """Opacus's RDP analysis of the same Gaussian mechanism (sampling rate 1: everyone)."""
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    rdp = opacus_rdp.compute_rdp(q=1.0, noise_multiplier=noise, steps=releases, orders=orders)
    eps, _ = opacus_rdp.get_privacy_spent(orders=orders, rdp=rdp, delta=DELTA)
    return float(eps)


@pytest.mark.parametrize(("epsilon", "rounds"), [(1.0, 20), (8.0, 20), (4.0, 5)])
def test_calibrated_noise_spends_the_budget(epsilon: float, rounds: int) -> None:
    noise = calibrate_noise(epsilon, DELTA, rounds, 20)
    assert epsilon_after(noise, rounds, 20, DELTA) <= epsilon
    assert epsilon_after(noise * 0.99, rounds, 20, DELTA) > epsilon * 0.995
    assert opacus_epsilon(noise, rounds) == pytest.approx(epsilon, rel=0.02)
    with pytest.raises(ValueError, match="finite epsilon"):
        calibrate_noise(math.inf, DELTA, rounds, 20)


def test_strategy_is_flowers_wrapper_around_equal_fedavg() -> None:
    base = {"privacy": "dp-institution", "strategy": "fedavg", "epsilon": 2.0, "rounds": 10}
    server = build_strategy(RunSettings.model_validate(base), 20, COMMON)
    assert isinstance(server, DifferentialPrivacyServerSideFixedClipping)
    assert server.noise_multiplier == pytest.approx(calibrate_noise(2.0, DELTA, 10, 20))
    assert server.strategy.weighted_by_key == "unit-weight"  # type: ignore[attr-defined]
    assert server.accountant is not None
    client = build_strategy(
        RunSettings.model_validate({**base, "dp-clipping": "client", "clipping-norm": 0.5}),
        20,
        COMMON,
    )
    assert isinstance(client, DifferentialPrivacyClientSideFixedClipping)
    assert client.clipping_norm == 0.5
    with pytest.raises(ValueError, match="strategy = fedavgm with privacy = dp-institution"):
        RunSettings.from_run_config({**base, "strategy": "fedavgm"})
    with pytest.raises(ValueError, match="needs each institution's own update"):
        RunSettings.from_run_config({**base, "aggregator": "median"})
    with pytest.raises(ValueError, match="needs a finite budget"):
        RunSettings.from_run_config({**base, "epsilon": math.inf})


def echo_step(norms: dict[int, float]) -> AnsweringGrid:
    """Each node returns the weights it was sent plus a fixed step of the given L2 norm."""

    def answer(m: Message) -> RecordDict:
        node = m.metadata.dst_node_id
        w = m.content.array_records["arrays"]["w"].numpy()
        step = np.full_like(w, norms[node] / math.sqrt(w.size))
        return RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(w + step)}),
                "metrics": MetricRecord({"num-examples": 10}),
                "identity": ConfigRecord({"institution": f"bank-{node}"}),
            }
        )

    return AnsweringGrid(answer)


@pytest.mark.usefixtures("task_identity")
def test_unclipped_update_is_rejected_before_aggregation() -> None:
    grid = InstitutionGrid(
        echo_step({1: 0.99, 2: 1.5, 3: 0.2}),  # type: ignore[arg-type]
        min_valid_fraction=0.5,
        update_bound=1.0,
    )
    sent = {"w": np.zeros(16, dtype=np.float32)}
    msgs = [
        Message(
            RecordDict(
                {
                    "arrays": ArrayRecord({"w": Array(sent["w"])}),
                    "config": ConfigRecord({"server-round": 1}),
                }
            ),
            dst_node_id=n,
            message_type=MessageType.TRAIN,
        )
        for n in (1, 2, 3)
    ]
    valid = list(grid.send_and_receive(msgs))
    assert [str(r.content["identity"]["institution"]) for r in valid] == ["bank-1", "bank-3"]
    assert grid.exchanges[-1].rejected["bank-2"].startswith("unclipped: update norm 1.5 ")


@pytest.mark.integration
def test_federation_budget_stops_release(tmp_path: Path) -> None:
    """Client-side clipping and a fixed noise that the budget allows for two releases only:
    the run stops after round 2, says so, every update is within the bound, and the signed
    model carries the accounting."""
    noise, n = 2.0, 3
    budget = (epsilon_after(noise, 2, n, DELTA) + epsilon_after(noise, 3, n, DELTA)) / 2
    from jointcredit.simulations.simulate import simulate

    settings = RunSettings.model_validate(
        {
            "dataset": "synthetic",
            "institutions": n,
            "synthetic-rows": 600,
            "rounds": 4,
            "strategy": "fedavg",
            "privacy": "dp-institution",
            "dp-clipping": "client",
            "clipping-norm": 0.5,
            "epsilon": budget,
            "noise-multiplier": noise,
            "checkpoints": False,
            "finetune-epochs": 0,
            "out-dir": str(tmp_path / "run"),
        }
    )
    metrics = simulate(settings, with_baselines=False, with_audit=False).as_json()
    privacy = metrics["privacy"]
    assert privacy["setting"] == "dp-institution"
    assert privacy["stopped"]["after_round"] == 2 == metrics["trained_rounds"]
    assert privacy["epsilon_spent"] == pytest.approx(epsilon_after(noise, 2, n, DELTA))
    assert privacy["epsilon_spent"] <= budget
    assert set(privacy["epsilon_per_institution"].values()) == {privacy["epsilon_spent"]}
    assert privacy["institution_dp"]["releases"] == 2
    assert privacy["institution_dp"]["noise_multiplier"] == noise
    assert metrics["security"]["rejected_replies"] == 0  # every institution clipped
    assert [r.get("epsilon") for r in metrics["rounds"][:2]] == sorted(
        r["epsilon"] for r in metrics["rounds"][:2]
    )
    manifest = json.loads((tmp_path / "run" / "model" / "manifest.json").read_text())
    assert manifest["privacy"]["epsilon_spent"] == privacy["epsilon_spent"]
