"""SCAFFOLD: the drift-corrected local step, the control variate on the wire, the strategy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from grid_helpers import AnsweringGrid
from torch import nn

from jointcredit.federation import control
from jointcredit.federation.recipes import recipe
from jointcredit.federation.settings import RunSettings
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.training import DriftControl, TrainConfig, train
from jointcredit.server.scaffold import Scaffold


def _rows(
    rng: np.random.Generator, n: int, w: np.ndarray, shift: float
) -> tuple[np.ndarray, np.ndarray]:
    x = (rng.normal(size=(n, len(w))) + shift).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ w)))).astype(int)
    return x, y


def test_one_step_follows_the_corrected_gradient_and_reports_the_raw_one() -> None:
    rng = np.random.default_rng(0)
    x, y = _rows(rng, 64, np.array([1.0, -2.0, 0.5]), 0.0)
    model = build_model(architecture("logreg", 3), seed=3)
    start = copy.deepcopy(model)
    loss = nn.BCEWithLogitsLoss()(start(torch.from_numpy(x)), torch.from_numpy(y).float())
    grads = torch.autograd.grad(loss, list(start.parameters()))
    correction = [torch.full_like(g, 0.25) for g in grads]
    drift = DriftControl(correction)
    cfg = TrainConfig(steps=1, batch_size=64, learning_rate=0.1, optimizer="sgd", seed=1)
    train(model, x, y, cfg, control=drift)
    for p, p0, g, c in zip(model.parameters(), start.parameters(), grads, correction, strict=True):
        torch.testing.assert_close(p.detach(), p0.detach() - 0.1 * (g + c))
    assert drift.mean_gradient is not None
    for got, g in zip(drift.mean_gradient, grads, strict=True):
        torch.testing.assert_close(got, g)  # c_i is the loss's own gradient, uncorrected


def test_a_zero_correction_changes_nothing_and_bad_controls_are_refused() -> None:
    rng = np.random.default_rng(1)
    x, y = _rows(rng, 300, np.array([0.5, 1.0]), 0.0)
    cfg = TrainConfig(epochs=2, learning_rate=0.01, seed=4)
    plain, corrected = (build_model(architecture("mlp", 2), seed=2) for _ in range(2))
    train(plain, x, y, cfg)
    train(
        corrected,
        x,
        y,
        cfg,
        control=DriftControl([torch.zeros_like(p) for p in corrected.parameters()]),
    )
    for a, b in zip(plain.parameters(), corrected.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="drift correction has 1 tensors"):
        train(plain, x, y, cfg, control=DriftControl([torch.zeros(1)]))
    anchor = [p.detach().clone() for p in plain.parameters()]
    with pytest.raises(ValueError, match="proximal"):
        train(
            plain, x, y, TrainConfig(proximal_mu=0.1), global_params=anchor,
            control=DriftControl([torch.zeros_like(p) for p in plain.parameters()]),
        )  # fmt: skip


def _federate(books: list[tuple[np.ndarray, np.ndarray]], rounds: int, scaffold: bool) -> float:
    """The same weighted average Flower's FedAvg takes, with or without the control variates;
    returns the pooled training loss of the final model."""
    model = build_model(architecture("logreg", books[0][0].shape[1]), seed=0)
    weights = np.array([len(y) for _, y in books], dtype=float) / sum(len(y) for _, y in books)
    c = [torch.zeros_like(p) for p in model.parameters()]
    c_i = [[torch.zeros_like(p) for p in model.parameters()] for _ in books]
    cfg = TrainConfig(epochs=10, batch_size=32, learning_rate=0.05, optimizer="sgd", seed=0)
    for _ in range(rounds):
        states, controls = [], []
        for k, (x, y) in enumerate(books):
            local = copy.deepcopy(model)
            drift = (
                DriftControl([a - b for a, b in zip(c, c_i[k], strict=True)]) if scaffold else None
            )
            train(local, x, y, cfg, control=drift)
            states.append(local.state_dict())
            if drift is not None:
                assert drift.mean_gradient is not None
                c_i[k] = drift.mean_gradient
                controls.append(drift.mean_gradient)
        model.load_state_dict(
            {n: sum(w * s[n] for w, s in zip(weights, states, strict=True)) for n in states[0]}
        )
        if scaffold:
            c = [
                sum(w * ck[j] for w, ck in zip(weights, controls, strict=True))
                for j in range(len(c))
            ]
    x = np.concatenate([b[0] for b in books])
    y = np.concatenate([b[1] for b in books])
    with torch.no_grad():
        return float(
            nn.BCEWithLogitsLoss()(model(torch.from_numpy(x)), torch.from_numpy(y).float())
        )


def test_scaffold_corrects_the_drift_of_heterogeneous_books() -> None:
    """Two lenders whose books disagree (different risk weights and populations): with many
    local steps FedAvg settles between their optima, away from the pooled one; SCAFFOLD's
    correction brings the federation to the pooled optimum's loss. A wrong sign or a stale
    control variate would not."""
    rng = np.random.default_rng(7)
    books = [
        _rows(rng, 400, np.array([2.0, -1.0, 0.0]), 1.0),
        _rows(rng, 200, np.array([-1.0, 0.5, 2.0]), -1.0),
    ]
    pooled = build_model(architecture("logreg", 3), seed=0)
    x = np.concatenate([b[0] for b in books])
    y = np.concatenate([b[1] for b in books])
    train(pooled, x, y, TrainConfig(epochs=200, batch_size=600, learning_rate=0.5, optimizer="sgd"))
    with torch.no_grad():
        optimum = float(
            nn.BCEWithLogitsLoss()(pooled(torch.from_numpy(x)), torch.from_numpy(y).float())
        )
    fedavg = _federate(books, rounds=15, scaffold=False)
    scaffold = _federate(books, rounds=15, scaffold=True)
    assert scaffold - optimum < 0.25 * (fedavg - optimum)


def test_control_variates_ride_in_the_one_array_record() -> None:
    model = ArrayRecord(build_model(architecture("mlp", 4), seed=0).state_dict())
    zero = control.zeros(model)
    joined = control.join(model, zero)
    assert len(joined) == 2 * len(model)
    back, c = control.split(joined)
    assert list(back.keys()) == list(model.keys()) and list(c.keys()) == list(model.keys())
    assert all((c[k].numpy() == 0).all() for k in c)
    assert control.split(model)[1] == ArrayRecord()  # evaluate messages carry none
    with pytest.raises(ValueError, match="does not match"):
        control.join(model, ArrayRecord({"other": zero["net.0.weight"]}))


def _trainers(with_control: bool = True) -> AnsweringGrid:
    """Nodes 1 and 2 (30 and 10 rows) train: each returns the sent model + 1.0 / -1.0 and,
    as its c_i, 0.4 / 1.0 everywhere."""
    delta, grad, examples = {1: 1.0, 2: -1.0}, {1: 0.4, 2: 1.0}, {1: 30, 2: 10}

    def answer(msg: Message) -> RecordDict:
        node = msg.metadata.dst_node_id
        model, _ = control.split(msg.content["arrays"])  # type: ignore[arg-type]
        trained = ArrayRecord({k: Array(a.numpy() + delta[node]) for k, a in model.items()})
        if with_control:
            c_i = ArrayRecord(
                {k: Array(np.full_like(a.numpy(), grad[node])) for k, a in model.items()}
            )
            trained = control.join(trained, c_i)
        return RecordDict(
            {"arrays": trained, "metrics": MetricRecord({"num-examples": examples[node]})}
        )

    return AnsweringGrid(answer, nodes=[1, 2])


@pytest.mark.usefixtures("task_identity")
def test_strategy_sends_c_and_keeps_the_example_weighted_mean_of_the_replies() -> None:
    grid = _trainers()
    strategy = Scaffold(fraction_train=1.0, min_train_nodes=2, min_available_nodes=2)
    initial = ArrayRecord(build_model(architecture("logreg", 3), seed=0).state_dict())
    sent = list(strategy.configure_train(1, initial, ConfigRecord({}), grid))  # type: ignore[arg-type]
    _, c = control.split(sent[0].content["arrays"])  # type: ignore[arg-type]
    assert all((c[k].numpy() == 0).all() for k in c)  # round 1: c = 0
    arrays, _ = strategy.aggregate_train(1, grid.send_and_receive(sent))
    assert arrays is not None and list(arrays.keys()) == list(initial.keys())  # model only
    w = initial["linear.weight"].numpy()
    np.testing.assert_allclose(
        arrays["linear.weight"].numpy(), w + 0.75 * 1.0 + 0.25 * -1.0, rtol=1e-6
    )
    nxt = list(strategy.configure_train(2, arrays, ConfigRecord({}), grid))  # type: ignore[arg-type]
    _, c2 = control.split(nxt[0].content["arrays"])  # type: ignore[arg-type]
    np.testing.assert_allclose(c2["linear.weight"].numpy(), 0.75 * 0.4 + 0.25 * 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="without SCAFFOLD control variates"):
        strategy.aggregate_train(2, _trainers(with_control=False).send_and_receive(nxt))


def test_scaffold_refuses_settings_its_control_variates_would_bypass() -> None:
    RunSettings.from_run_config({"strategy": "scaffold"})
    for extra in ({"privacy": "dp-record"}, {"privacy": "secagg"}, {"aggregator": "median"}):
        with pytest.raises(ValueError, match="SCAFFOLD works only"):
            RunSettings.from_run_config({"strategy": "scaffold", **extra})


def test_the_mlp_recipe_leaves_scaffold_out_where_it_cannot_go() -> None:
    assert recipe("logreg")["strategy"] == "fedavgm"
    assert recipe("mlp")["strategy"] == "scaffold"
    assert RunSettings(model="mlp").strategy == "scaffold"
    for privacy, aggregator in (("dp-record", "fedavg"), ("secagg", "fedavg"), ("none", "krum")):
        assert recipe("mlp", privacy, aggregator)["strategy"] == "fedavgm"
        settings = RunSettings.from_run_config(
            {"model": "mlp", "privacy": privacy, "aggregator": aggregator}
        )
        assert settings.strategy == "fedavgm" and settings.server_momentum == 0.5
