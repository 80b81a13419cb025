"""Simulated faults (crash, dropout, straggler): the plan, its settings rules, and what the
coordinator's grid does with replies that fail, never come or come late."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg
from grid_helpers import AnsweringGrid

from jointcredit.client.faults import SimulatedCrash, fault_mod
from jointcredit.data.catalog import resolve
from jointcredit.federation.faults import FaultPlan, faulted_round, parse_faults
from jointcredit.federation.protocol import HISTOGRAMS_TRAIN
from jointcredit.federation.settings import RunSettings, SettingsError
from jointcredit.server.faults import SimulatedNetwork
from jointcredit.server.grid import InstitutionGrid, RoundFailed

NAMES = {1: "alpha-bank", 2: "beta-bank", 3: "gamma-bank", 4: "delta-bank"}


def test_a_fault_plan_parses_and_names_a_bad_item() -> None:
    plan = parse_faults("dropout=0.3, straggler=0.1,crash=0.05")
    assert plan == FaultPlan(crash=0.05, dropout=0.3, straggler=0.1) and plan.active
    assert not parse_faults("").active
    for bad in ("drop=0.3", "dropout", "dropout=x", "dropout=1.5", "dropout=0.2,dropout=0.1"):
        with pytest.raises(ValueError, match="expected KIND=SHARE"):
            parse_faults(bad)
    with pytest.raises(ValueError, match="add up to more than 1"):
        parse_faults("dropout=0.6,crash=0.5")


def test_draws_are_seeded_per_round_and_institution_and_nested_by_rate() -> None:
    names = [f"lender-{i:02d}" for i in range(50)]
    low, high = parse_faults("dropout=0.1"), parse_faults("dropout=0.3")
    draws = {(r, i): high.fault(42, r, i) for r in range(1, 41) for i in names}
    assert draws == {(r, i): high.fault(42, r, i) for r in range(1, 41) for i in names}
    share = sum(f == "dropout" for f in draws.values()) / len(draws)
    assert 0.27 < share < 0.33
    # A higher rate drops a superset: runs at two rates differ only by the extra dropouts.
    assert all(high.fault(42, r, i) for r in range(1, 41) for i in names if low.fault(42, r, i))
    assert draws != {(r, i): high.fault(43, r, i) for r in range(1, 41) for i in names}
    mixed = parse_faults("crash=0.2,dropout=0.2,straggler=0.2")
    kinds = {mixed.fault(1, r, i) for r in range(1, 41) for i in names}
    assert kinds == {None, "crash", "dropout", "straggler"}


def _content(server_round: int) -> RecordDict:
    return RecordDict({"config": ConfigRecord({"server-round": server_round})})


def test_only_training_rounds_and_tree_levels_are_faulted() -> None:
    assert faulted_round(MessageType.TRAIN, _content(3), rounds=5, gbdt=False) == 3
    assert faulted_round(MessageType.EVALUATE, _content(5), rounds=5, gbdt=False) == 5
    # The final (personalisation) round and the queries are not.
    assert faulted_round(MessageType.EVALUATE, _content(6), rounds=5, gbdt=False) is None
    assert faulted_round(MessageType.QUERY, _content(1), rounds=5, gbdt=False) is None
    level = RecordDict(
        {
            "config": ConfigRecord(
                {"server-round": 17, "tree": 3, "level": 1, "ensemble": "00", "bins-digest": "x"}
            )
        }
    )
    assert faulted_round(HISTOGRAMS_TRAIN, level, rounds=5, gbdt=True) == 4  # the tree
    assert faulted_round(MessageType.EVALUATE, _content(1), rounds=5, gbdt=True) is None


def test_settings_refuse_faults_where_they_cannot_run() -> None:
    base = {"faults": "dropout=0.3", "model": "logreg"}
    assert RunSettings.from_run_config(base).faults == "dropout=0.3"
    with pytest.raises(SettingsError, match="faults 'dropout=2'"):
        RunSettings.from_run_config({**base, "faults": "dropout=2"})
    with pytest.raises(SettingsError, match="faults is a simulation setting"):
        RunSettings.from_run_config({**base, "trust-file": "t.json", "coordinator-key": "c.key"})
    with pytest.raises(SettingsError, match="faults with privacy = secagg"):
        RunSettings.from_run_config({**base, "privacy": "secagg"})
    with pytest.raises(SettingsError, match="faults with privacy = dp-institution"):
        RunSettings.from_run_config({**base, "privacy": "dp-institution"})
    settings = RunSettings.from_run_config({**base, "min-institutions": 5})
    assert settings.for_institutions(5).min_institutions == 5
    with pytest.raises(SettingsError, match="min-institutions = 5 but the run has 4"):
        settings.for_institutions(4)
    assert settings.join_seconds == settings.round_timeout
    assert settings.replaced(join_timeout=900).join_seconds == 900


def _answers() -> AnsweringGrid:
    def answer(m: Message) -> RecordDict:
        return RecordDict(
            {
                "metrics": MetricRecord(
                    {"num-examples": 10, "train-loss": 0.5}
                    if m.metadata.message_type == MessageType.TRAIN
                    else {"auc": 0.7, "ks": 0.1, "brier": 0.2, "num-examples": 10}
                ),
                "identity": ConfigRecord({"institution": NAMES[m.metadata.dst_node_id]}),
            }
        )

    return AnsweringGrid(answer, nodes=NAMES)


def _round(server_round: int, mtype: str = MessageType.EVALUATE) -> list[Message]:
    return [Message(_content(server_round), dst_node_id=n, message_type=mtype) for n in NAMES]


def _faulted_grid(plan: dict[str, str], timeout: float, **grid: int) -> InstitutionGrid:
    """An InstitutionGrid behind a simulated network that gives these institutions' faults."""
    settings = RunSettings.from_run_config(
        {"model": "logreg", "rounds": 3, "round-timeout": timeout, "faults": "dropout=0.5"}
    )
    igrid: InstitutionGrid
    network = SimulatedNetwork.around(_answers(), settings, lambda: igrid.node_institution)
    assert isinstance(network, SimulatedNetwork)
    network.plan = _Fixed(plan)  # type: ignore[assignment]
    igrid = InstitutionGrid(network, min_valid_fraction=0.5, **grid)
    igrid._claimed.update(NAMES)  # as after the preprocessing query
    return igrid


class _Fixed:
    """The same faults for these institutions in every round."""

    active = True

    def __init__(self, plan: dict[str, str]) -> None:
        self.plan = plan

    def fault(self, seed: int, server_round: int, institution: str) -> str | None:
        return self.plan.get(institution)


@pytest.mark.usefixtures("task_identity")
def test_a_straggler_is_not_waited_for_and_its_late_reply_is_noted_not_used() -> None:
    grid = _faulted_grid({"beta-bank": "straggler", "delta-bank": "dropout"}, timeout=0.4)
    started = time.monotonic()
    replies = list(grid.send_and_receive(_round(1), timeout=0.4))
    waited = time.monotonic() - started
    assert 0.4 <= waited < 0.55  # the round timeout, not the straggler's 0.6 s
    assert sorted(grid.exchanges[-1].metrics) == ["alpha-bank", "gamma-bank"]
    assert len(replies) == 2
    first = grid.exchanges[-1]
    assert first.errors["beta-bank"] == first.errors["delta-bank"]
    assert first.errors["beta-bank"].startswith("no reply before the timeout (0.4 s)")
    time.sleep(0.3)  # the straggler's reply has arrived by now (1.5 round timeouts)
    replies = list(grid.send_and_receive(_round(2), timeout=0.4))
    # Round 2 holds round 2's replies only: the late one is recorded on round 1, unused.
    assert len(replies) == 2 and sorted(grid.exchanges[-1].metrics) == ["alpha-bank", "gamma-bank"]
    assert first.errors["beta-bank"].startswith("replied after the round had ended")
    assert first.errors["beta-bank"].endswith("not used")
    assert first.errors["delta-bank"].startswith("no reply before the timeout")


@pytest.mark.usefixtures("task_identity")
def test_below_the_quorum_the_round_fails_naming_who_replied_and_who_dropped() -> None:
    grid = _faulted_grid({"beta-bank": "dropout"}, timeout=0.2, min_institutions=4)
    with pytest.raises(RoundFailed) as info:
        grid.send_and_receive(_round(2, MessageType.TRAIN), timeout=0.2)
    assert info.value.server_round == 2
    text = str(info.value)
    assert "round 2 train: 3 valid replies of 4, 4 needed" in text
    assert "replied: alpha-bank, delta-bank, gamma-bank" in text
    assert "dropped: beta-bank: no reply before the timeout (0.2 s)" in text
    # Without min-institutions, half of four is enough.
    grid = _faulted_grid({"beta-bank": "dropout", "delta-bank": "dropout"}, timeout=0.2)
    assert len(list(grid.send_and_receive(_round(2, MessageType.TRAIN), timeout=0.2))) == 2


@pytest.mark.usefixtures("task_identity")
def test_strategies_address_the_federation_even_when_nodes_are_offline() -> None:
    """Flower's sampling waits, without a deadline, for `min_available_nodes` nodes online;
    the grid answers with the federation's nodes, and an offline one times out like any
    dropout."""
    online = _answers()
    online.nodes = [1, 2, 3]  # node 4 went offline
    grid = InstitutionGrid(online)  # type: ignore[arg-type]
    grid.hold_members([1, 2, 3, 4])
    strategy = FedAvg(min_train_nodes=4, min_available_nodes=4)
    started = time.monotonic()
    messages = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid))
    assert sorted(m.metadata.dst_node_id for m in messages) == [1, 2, 3, 4]
    assert time.monotonic() - started < 0.5


def _client_context(partition: int, faults: str, node_config: dict | None = None) -> Context:
    settings = RunSettings.from_run_config(
        {"institutions": 3, "rounds": 2, "seed": 5, "model": "logreg", "faults": faults}
    )
    return Context(
        run_id=7,
        node_id=100 + partition,
        node_config=node_config or {"partition-id": partition, "num-partitions": 3},
        state=RecordDict(),
        run_config=settings.to_run_config(),
    )


@pytest.mark.usefixtures("task_identity")
def test_a_node_drawn_to_crash_raises_after_its_work_and_only_in_simulations() -> None:
    ids = resolve(RunSettings(institutions=3, model="logreg").data).ids
    plan = parse_faults("crash=0.5")
    crash = next((r, p) for r in (1, 2) for p in range(3) if plan.fault(5, r, ids[p]))
    calm = next((r, p) for r in (1, 2) for p in range(3) if not plan.fault(5, r, ids[p]))
    worked: list[int] = []

    def handler(msg: Message, context: Context) -> Message:
        worked.append(context.node_id)
        return Message(RecordDict(), reply_to=msg)

    def send(server_round: int, partition: int, **kw: object) -> Message:
        msg = Message(_content(server_round), dst_node_id=1, message_type=MessageType.TRAIN)
        msg.metadata.__dict__["_message_id"] = "m"
        return fault_mod(msg, _client_context(partition, "crash=0.5", **kw), handler)  # type: ignore[arg-type]

    with pytest.raises(SimulatedCrash, match=f"{ids[crash[1]]} crashed in round {crash[0]}"):
        send(*crash)
    assert worked == [100 + crash[1]]  # it did the work, then crashed
    send(*calm)
    deployed = {"data-file": "x.csv", "institution": ids[crash[1]]}
    with pytest.raises(RuntimeError, match="simulations only"):
        send(*crash, node_config=deployed)


def test_round_records_list_the_dropped_with_their_reason() -> None:
    from jointcredit.server.grid import Exchange
    from jointcredit.server.report import round_records

    failed = Exchange(
        MessageType.EVALUATE,
        1,
        metrics={"alpha-bank": {"auc": 0.7, "ks": 0.1, "brier": 0.2, "num-examples": 10.0}},
        errors={"beta-bank": "beta-bank crashed in round 1 (simulated fault)"},
    )
    grid = SimpleNamespace(exchanges=[failed])
    (record,) = round_records(grid, {}, 1, {})  # type: ignore[arg-type]
    dumped = record.model_dump(exclude_unset=True)
    assert dumped["dropped"] == [
        {
            "institution": "beta-bank",
            "exchange": "evaluate",
            "reason": "beta-bank crashed in round 1 (simulated fault)",
        }
    ]


def test_the_metrics_schema_has_the_dropped_institutions() -> None:
    from jointcredit.federation.metrics import RunMetrics

    schema = RunMetrics.model_json_schema()
    assert "dropped" in schema["$defs"]["RoundRecord"]["properties"]
    assert set(schema["$defs"]["Dropped"]["properties"]) == {"institution", "exchange", "reason"}


def test_a_stopped_round_survives_pickling() -> None:
    """A sweep runs each cell in another process: the exception that stops a run must come
    back whole (Exception's default pickling called __init__ with the message alone, and the
    sweep saw a broken process pool instead of the reason)."""
    import pickle

    from jointcredit.server.grid import RoundFailed

    back = pickle.loads(pickle.dumps(RoundFailed("round 2 train: 4 valid replies of 5", 2)))
    assert isinstance(back, RoundFailed)
    assert str(back) == "round 2 train: 4 valid replies of 5" and back.server_round == 2
