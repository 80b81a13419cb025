"""The coordinator's bookkeeping without a simulation: which Flower strategy the settings
build, what metrics.json says about rounds and privacy, and SecAgg+'s checks."""

from __future__ import annotations

import math
from typing import Any

import pytest
from flwr.app import MessageType
from flwr.serverapp.strategy import (
    Bulyan,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
)

from jointcredit.federation.protocol import EvaluateMetrics, TrainMetrics
from jointcredit.federation.settings import RunSettings
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import Exchange, InstitutionGrid
from jointcredit.server.privacy import privacy_record
from jointcredit.server.report import round_records
from jointcredit.server.scaffold import Scaffold
from jointcredit.server.secagg import aggregated_per_round, shares_and_threshold
from jointcredit.server.strategy import build_strategy

COMMON: dict[str, Any] = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"model": "logreg"}, FedAvgM),
        ({"strategy": "fedavg"}, FedAvg),
        ({"strategy": "fedprox", "proximal-mu": 0.3}, FedProx),
        ({"model": "mlp"}, Scaffold),
        ({"aggregator": "median"}, FedMedian),
        ({"aggregator": "trimmed", "trim-fraction": 0.1}, FedTrimmedAvg),
        ({"aggregator": "krum"}, Krum),
        ({"aggregator": "multikrum"}, MultiKrum),
        ({"aggregator": "bulyan"}, Bulyan),
        ({"privacy": "dp-institution"}, DifferentialPrivacyServerSideFixedClipping),
        (
            {"privacy": "dp-institution", "dp-clipping": "client"},
            DifferentialPrivacyClientSideFixedClipping,
        ),
    ],
)
def test_the_settings_choose_the_flower_strategy(
    config: dict[str, Any], expected: type[object]
) -> None:
    settings = RunSettings.from_run_config(config).for_institutions(7)
    strategy = build_strategy(settings, 7, COMMON)
    assert type(strategy) is expected
    if isinstance(strategy, FedProx):
        assert strategy.proximal_mu == 0.3
    if isinstance(strategy, FedTrimmedAvg):
        assert strategy.beta == 0.1
    if isinstance(strategy, FedAvgM):
        assert strategy.server_momentum == 0.7
    if type(strategy) is MultiKrum:  # n - f institutions kept, f = 1 by default
        assert strategy.num_nodes_to_select == 6


def _train(
    round_: int, rows: dict[str, TrainMetrics], withheld: set[str] = frozenset()
) -> Exchange:  # type: ignore[assignment]
    ex = Exchange(MessageType.TRAIN, round_)
    for inst, m in rows.items():
        target = ex.withheld if inst in withheld else ex.metrics
        target[inst] = {k: float(v) for k, v in m.values().items()}
    return ex


def _dp(
    eps: float, steps: int, planned: int = 4, rows: int = 100, loss: float = 0.5
) -> TrainMetrics:
    return TrainMetrics(
        num_examples=0 if steps == 0 else rows,
        train_loss=None if steps == 0 else loss,
        dp_epsilon=eps,
        dp_steps=float(steps),
        dp_planned_steps=float(planned),
        dp_noise_multiplier=1.1,
        dp_sample_rate=0.01,
        dp_exhausted=float(steps < planned),
    )


def test_the_record_dp_ledger_is_read_from_the_signed_replies() -> None:
    settings = RunSettings.from_run_config({"privacy": "dp-record", "epsilon": 1.0})
    exchanges = [
        _train(1, {"a": _dp(0.4, 4), "b": _dp(0.5, 4)}),
        _train(2, {"a": _dp(0.7, 4), "b": _dp(1.0, 2)}),
        _train(3, {"a": _dp(0.95, 4), "b": _dp(1.0, 0)}, withheld={"b"}),
    ]
    record = privacy_record(settings, exchanges, ["a", "b"])
    assert record["epsilon_spent"] == 1.0  # the largest: every borrower's guarantee
    assert record["epsilon_per_institution"] == {"a": 0.95, "b": 1.0}
    dp = record["record_dp"]
    assert dp.steps == {"a": 12, "b": 6}
    assert dp.budget_exhausted_round == {"b": 2}
    noiseless = RunSettings.from_run_config({"privacy": "dp-record", "epsilon": "inf"})
    unnoised = [_train(1, {"a": _dp(-1.0, 4)})]  # -1: no noise, no guarantee
    record = privacy_record(noiseless, unnoised, ["a"])
    assert record["epsilon"] is None and record["epsilon_spent"] is None
    assert record["epsilon_per_institution"] == {"a": None}


def _evaluated(auc: float) -> dict[str, float]:
    values = EvaluateMetrics(num_examples=5, auc=auc, ks=0.1, brier=0.2).values()
    return {k: float(v) for k, v in values.items()}


def test_round_records_weigh_the_loss_and_name_who_withheld() -> None:
    grid = InstitutionGrid(inner=None)  # type: ignore[arg-type]
    grid.exchanges = [
        _train(1, {"a": _dp(0.4, 4, rows=300, loss=0.2), "b": _dp(0.5, 4, rows=100, loss=0.6)}),
        _train(2, {"a": _dp(0.6, 4, rows=300), "b": _dp(1.0, 0)}, withheld={"b"}),
        Exchange(
            MessageType.EVALUATE, 1, metrics={"a": _evaluated(0.8), "b": _evaluated(math.nan)}
        ),
    ]
    rounds = round_records(grid, {1: {"auc": 0.81}}, 2, {})
    assert [r.round for r in rounds] == [1, 2]
    assert rounds[0].train_loss == pytest.approx(0.75 * 0.2 + 0.25 * 0.6)
    assert rounds[0].per_institution_auc == {"a": 0.8, "b": None}  # NaN: undefined
    assert rounds[0].central == {"auc": 0.81}
    assert rounds[1].withheld == ["b"] and rounds[1].train_institutions == ["a"]
    assert rounds[1].epsilon_per_institution == {"a": 0.6, "b": 1.0}


@pytest.mark.parametrize(
    ("n", "shares", "threshold", "expected"),
    [
        (4, 1.0, 0.5, (3, 2)),
        (10, 1.0, 0.5, (9, 5)),
        (10, 5, 3, (5, 3)),
        (3, 0.1, 0.1, (3, 2)),
        (20, 7, 0.5, (7, 4)),
    ],
)
def test_secagg_shares_are_odd_at_least_three_and_never_above_the_federation(
    n: int, shares: float, threshold: float, expected: tuple[int, int]
) -> None:
    settings = RunSettings.from_run_config(
        {"privacy": "secagg", "secagg-shares": shares, "secagg-threshold": threshold}
    )
    got = shares_and_threshold(settings.for_institutions(n), n)
    assert got == expected
    assert got[0] % 2 == 1 and 2 <= got[1] < got[0] <= n  # what Flower's workflow accepts


def test_secagg_fails_a_round_the_workflow_only_logged() -> None:
    assert aggregated_per_round([(1, 4), (2, 3)], 2) == {1: 4, 2: 3}
    with pytest.raises(FederationError, match=r"round\(s\) \[2\]"):
        aggregated_per_round([(1, 4)], 2)


@pytest.mark.usefixtures("task_identity")
def test_a_reply_whose_metrics_break_the_protocol_is_rejected_not_fatal() -> None:
    from flwr.app import Message, MetricRecord, RecordDict
    from grid_helpers import AnsweringGrid

    from jointcredit.federation import protocol

    def answer(m: Message) -> RecordDict:
        node = m.metadata.dst_node_id
        metrics = EvaluateMetrics(num_examples=5, auc=0.7, ks=0.3, brier=0.2)
        content = protocol.evaluate_reply(f"bank-{node}", metrics)
        if node == 2:  # a newer or hostile node: a metric the protocol does not have
            record = content.metric_records[protocol.METRICS]
            content[protocol.METRICS] = MetricRecord({**record, "gradient-norm": 3.0})
        if node == 3:  # no test rows reported
            content[protocol.METRICS] = MetricRecord({"auc": 0.5})
        return content

    grid = InstitutionGrid(AnsweringGrid(answer), min_valid_fraction=0.3)  # type: ignore[arg-type]
    sent = [
        Message(RecordDict(), dst_node_id=n, message_type=MessageType.EVALUATE) for n in (1, 2, 3)
    ]
    replies = list(grid.send_and_receive(sent))
    ex = grid.exchanges[-1]
    assert [protocol.claimed_institution(r.content) for r in replies] == ["bank-1"]
    assert (
        ex.rejected["bank-2"].startswith("malformed:") and "gradient-norm" in ex.rejected["bank-2"]
    )
    assert "num-examples" in ex.rejected["bank-3"] and set(ex.metrics) == {"bank-1"}


def test_security_itemises_the_secure_sum_grids_rejections() -> None:
    """A tampered SecAgg+ stage reply of a binning round or a tree level is verified on the
    sum grid; metrics.json must name it like a rejection on the main grid."""
    from types import SimpleNamespace

    from jointcredit.server.report import security

    main = SimpleNamespace(
        exchanges=[Exchange(MessageType.TRAIN, 1, rejected={"b": "tampered: x"})]
    )
    sums = SimpleNamespace(
        exchanges=[Exchange("query.bin_grid", None, rejected={"c": "replayed: y"})]
    )
    verifier = SimpleNamespace(
        accepted=5, rejected={"tampered": 1, "replayed": 1}, sign_seconds=0.0, verify_seconds=0.0
    )
    identity = SimpleNamespace(
        trust=SimpleNamespace(digest=lambda: "0" * 64, coordinator=SimpleNamespace(key_id="k"))
    )
    out = security(main, verifier, identity, (sums, None))  # type: ignore[arg-type]
    assert [(r.institution, r.reason, r.message_type) for r in out.rejections] == [
        ("b", "tampered", MessageType.TRAIN),
        ("c", "replayed", "query.bin_grid"),
    ]
    assert out.rejected_replies == sum(out.rejected_by_reason.values()) == 2
