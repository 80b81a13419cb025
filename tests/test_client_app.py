"""The ClientApp in-process, with real Flower messages (no Ray, no SuperLink)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, MessageType, RecordDict

from jointcredit.client.app import app
from jointcredit.data.catalog import resolve
from jointcredit.data.schema import Schema
from jointcredit.federation import control, protocol
from jointcredit.federation.protocol import (
    EvaluateMetrics,
    ModelMessage,
    NodeConfig,
    RoundConfig,
    SummaryQuery,
    TrainMetrics,
)
from jointcredit.federation.settings import RunSettings
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.preprocessing import InstitutionSummary, agree
from jointcredit.trust.keyset import create_key_set
from jointcredit.trust.store import TrustStore
from jointcredit.trust.updates import SIGNATURE_RECORD

SETTINGS = RunSettings.from_run_config({"institutions": 3, "rounds": 1, "seed": 5})
KEYS: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def key_set(tmp_path_factory: pytest.TempPathFactory) -> TrustStore:
    """The run's key set, as `jointcredit simulate` makes one."""
    directory = tmp_path_factory.mktemp("keys")
    KEYS[:] = [directory]
    return create_key_set(directory, resolve(SETTINGS.data).ids, federation="test")


def _context(partition: int) -> Context:
    return Context(
        run_id=7,
        node_id=100 + partition,
        node_config=NodeConfig(partition_id=partition, num_partitions=3).values(),
        state=RecordDict(),
        run_config=SETTINGS.replaced(keys_dir=str(KEYS[0])).to_run_config(),
    )


def _send(content: RecordDict, mtype: str, partition: int) -> Message:
    msg = Message(content, dst_node_id=100 + partition, message_type=mtype)
    msg.metadata.__dict__["_message_id"] = f"m-{mtype}-{partition}"  # as the runtime would
    return app(msg, _context(partition))


def _train_metrics(reply: Message) -> TrainMetrics:
    return TrainMetrics.parse(protocol.numbers(reply.content))


def _evaluate_metrics(reply: Message) -> EvaluateMetrics:
    return EvaluateMetrics.parse(protocol.numbers(reply.content))


def _arrays(reply: Message) -> ArrayRecord:
    arrays = protocol.reply_arrays(reply.content)
    assert arrays is not None
    return arrays


QUERY = protocol.summary_query(SummaryQuery(max_categories=64, min_category_count=5))


@pytest.mark.usefixtures("task_identity")
def test_query_train_evaluate_round_trip() -> None:
    replies = [_send(QUERY, MessageType.QUERY, p) for p in range(3)]
    insts = [protocol.claimed_institution(r.content) for r in replies]
    assert len(set(insts)) == 3
    records = [protocol.parse_summary_reply(r.content) for r in replies]
    summaries = [InstitutionSummary.model_validate_json(r.summary) for r in records]
    schema = Schema.model_validate_json(records[0].data_schema)
    # Only aggregates leave the node: no raw rows, just counts and sums.
    assert all(s.rows > 0 for s in summaries)
    spec = agree(summaries, schema, max_categories=64, min_count=5)

    model = build_model(architecture("logreg", spec.n_outputs), seed=0)
    arrays = ArrayRecord(model.state_dict())
    train = ModelMessage(arrays, RoundConfig(preprocessing=spec.to_json(), server_round=1))
    reply = _send(train.to_content(), MessageType.TRAIN, 0)
    assert not reply.has_error()
    metrics = _train_metrics(reply)
    assert metrics.num_examples == summaries[0].rows
    assert metrics.train_loss is not None and 0 < metrics.train_loss < 1
    new = _arrays(reply).to_torch_state_dict()
    assert not all((new[k] == model.state_dict()[k]).all() for k in new)  # it trained

    # Same seed, same round, same data: the update is bit-identical.
    again = _send(train.to_content(), MessageType.TRAIN, 0)
    again_state = _arrays(again).to_torch_state_dict()
    assert all((new[k] == again_state[k]).all() for k in new)

    final = RoundConfig(preprocessing=spec.to_json(), server_round=2, finetune_epochs=1)
    ev = _send(ModelMessage(_arrays(reply), final).to_content(), MessageType.EVALUATE, 0)
    m = _evaluate_metrics(ev)
    assert 0.5 < m.auc <= 1
    assert m.auc_personalized is not None and not math.isnan(m.auc_personalized)
    # Every reply left the node signed.
    assert all(SIGNATURE_RECORD in r.content.config_records for r in [*replies, reply, ev])


@pytest.mark.usefixtures("task_identity")
def test_prior_query_and_hierarchical_personalisation() -> None:
    """`query.prior` returns signed squared deviations, one per parameter; the final evaluate
    message with the federation's sum personalises under that prior (no Ditto strength), and a
    sum that does not fit the model is an error, not a silent Ditto."""
    spec, n = _spec()
    arrays = ArrayRecord(build_model(architecture("logreg", n), seed=0).state_dict())
    query = ModelMessage(arrays, RoundConfig(preprocessing=spec))
    replies = [_send(query.to_content(), protocol.PRIOR_QUERY, p) for p in range(3)]
    assert all(SIGNATURE_RECORD in r.content.config_records for r in replies)
    devs = [protocol.prior_of(r.content) for r in replies]
    assert all(d is not None for d in devs)
    assert all(set(d.keys()) == {"linear.weight", "linear.bias"} for d in devs)
    assert all((d["linear.weight"].numpy() >= 0).all() for d in devs)
    assert devs[0]["linear.weight"].numpy().shape == (1, n)
    assert not np.array_equal(devs[0]["linear.weight"].numpy(), devs[1]["linear.weight"].numpy())
    total = ArrayRecord(
        {k: Array(sum(d[k].numpy() for d in devs)) for k in ("linear.weight", "linear.bias")}  # type: ignore[index]
    )
    final = RoundConfig(preprocessing=spec, server_round=2, finetune_epochs=1, prior_count=3)

    def evaluate(prior: ArrayRecord) -> Message:
        return _send(ModelMessage(arrays, final, prior).to_content(), MessageType.EVALUATE, 0)

    m = _evaluate_metrics(evaluate(total))
    assert m.auc_personalized is not None and m.auc_personalized > m.auc
    assert m.personalized_mu is None  # no Ditto strength under the prior
    # A node that kept its query.prior answer in its state uses it; one that lost its state
    # recomputes the same deviation: the same personalised model.
    ctx = _context(0)
    kept_query = Message(query.to_content(), dst_node_id=100, message_type=protocol.PRIOR_QUERY)
    kept_query.metadata.__dict__["_message_id"] = "m-prior-kept"
    app(kept_query, ctx)
    assert protocol.STATE_PRIOR in ctx.state.array_records
    ev = Message(
        ModelMessage(arrays, final, total).to_content(),
        dst_node_id=100,
        message_type=MessageType.EVALUATE,
    )
    ev.metadata.__dict__["_message_id"] = "m-eval-kept"
    assert _evaluate_metrics(app(ev, ctx)).auc_personalized == m.auc_personalized
    # (and it is the kept one that is used: a different kept deviation changes the prior)
    kept = ctx.state.array_records[protocol.STATE_PRIOR]
    ctx.state[protocol.STATE_PRIOR] = ArrayRecord({k: Array(kept[k].numpy() * 0) for k in kept})
    ev.metadata.__dict__["_message_id"] = "m-eval-zeroed"
    assert _evaluate_metrics(app(ev, ctx)).auc_personalized != m.auc_personalized
    with pytest.raises(ValueError, match="prior totals"):
        evaluate(ArrayRecord({"linear.weight": total["linear.weight"]}))


@pytest.mark.usefixtures("task_identity")
def test_bad_preprocessing_is_an_error_not_a_silent_result() -> None:
    model = build_model(architecture("logreg", 3), seed=0)
    content = ModelMessage(
        ArrayRecord(model.state_dict()), RoundConfig(preprocessing="{}", server_round=1)
    ).to_content()
    with pytest.raises(ValueError):
        _send(content, MessageType.TRAIN, 1)


def _spec() -> tuple[str, int]:
    replies = [_send(QUERY, MessageType.QUERY, p) for p in range(3)]
    records = [protocol.parse_summary_reply(r.content) for r in replies]
    schema = Schema.model_validate_json(records[0].data_schema)
    summaries = [InstitutionSummary.model_validate_json(r.summary) for r in records]
    spec = agree(summaries, schema, max_categories=64, min_count=5)
    return spec.to_json(), spec.n_outputs


@pytest.mark.usefixtures("task_identity")
def test_scaffold_control_variate_is_kept_by_the_institution_between_rounds() -> None:
    spec, n = _spec()
    model = ArrayRecord(build_model(architecture("logreg", n), seed=0).state_dict())
    context = _context(0)

    def train_msg(arrays: ArrayRecord, server_round: int, ctx: Context) -> Message:
        cfg = RoundConfig(preprocessing=spec, server_round=server_round)
        msg = Message(
            ModelMessage(arrays, cfg).to_content(),
            dst_node_id=100,
            message_type=MessageType.TRAIN,
        )
        msg.metadata.__dict__["_message_id"] = f"m-train-{server_round}"
        reply = app(msg, ctx)
        assert not reply.has_error()
        return reply

    first = train_msg(control.join(model, control.zeros(model)), 1, context)
    trained, c_i = control.split(_arrays(first))
    assert set(c_i.keys()) == set(model.keys())
    assert any(np.abs(a.numpy()).max() > 0 for a in c_i.values())  # a real mean gradient
    assert context.state[protocol.STATE_SCAFFOLD] == c_i  # kept where the next round finds it
    assert _train_metrics(first).scaffold_own_control == 0.0

    # Round 2 with c equal to this institution's own c_i: the correction c - c_i is zero,
    # so the update equals plain training; a node that lost its c_i would be pulled by c.
    with_own = train_msg(control.join(trained, c_i), 2, context)
    plain = train_msg(trained, 2, _context(0))
    forgetful = train_msg(control.join(trained, c_i), 2, _context(0))
    assert _train_metrics(with_own).scaffold_own_control == 1.0
    assert _train_metrics(forgetful).scaffold_own_control == 0.0
    got = control.split(_arrays(with_own))[0]
    assert all(np.array_equal(got[k].numpy(), _arrays(plain)[k].numpy()) for k in got)
    other = control.split(_arrays(forgetful))[0]
    assert not all(np.array_equal(got[k].numpy(), other[k].numpy()) for k in got)


@pytest.mark.usefixtures("task_identity")
def test_tree_levels_answer_with_signed_histograms_and_evaluate_the_ensemble() -> None:
    from jointcredit.client.data import node_data
    from jointcredit.federation.protocol import TreeLevelConfig, TreeLevelMessage
    from jointcredit.models.trees import TreeGrower, TreeParams, gradients
    from jointcredit.models.trees.bins import bins_from_rows
    from jointcredit.models.trees.bins import layout as bin_layout
    from jointcredit.models.trees.exchange import ensemble_record, tree_record
    from jointcredit.models.trees.tree import EMPTY_ENSEMBLE

    settings = SETTINGS.replaced(model="gbdt", keys_dir=str(KEYS[0]), personal_trees=2)
    context = Context(
        7,
        100,
        NodeConfig(partition_id=0, num_partitions=3).values(),
        RecordDict(),
        settings.to_run_config(),
    )
    summary = protocol.parse_summary_reply(_send(QUERY, MessageType.QUERY, 0).content)
    schema = Schema.model_validate_json(summary.data_schema)
    spec = agree(
        [InstitutionSummary.model_validate_json(summary.summary)],
        schema,
        max_categories=64,
        min_count=5,
    )
    node = node_data(dict(context.node_config), settings)
    bins = bins_from_rows([node.data.train.x], schema, spec, 16)
    grower = TreeGrower(bin_layout(bins), TreeParams(n_trees=1, max_depth=2))
    request = grower.request()
    assert request is not None
    config = TreeLevelConfig(
        server_round=1,
        tree=0,
        level=0,
        ensemble=EMPTY_ENSEMBLE.hex(),
        bins_digest=bins.digest(),
        bins=bins.to_json(),
        base_margin=-1.0,
    )
    msg = Message(
        TreeLevelMessage(config, tree_record(request.tree, request.build)).to_content(),
        dst_node_id=100,
        message_type=protocol.HISTOGRAMS_TRAIN,
    )
    msg.metadata.__dict__["_message_id"] = "m-hist-0"
    reply = app(msg, context)
    assert not reply.has_error(), reply.error
    assert SIGNATURE_RECORD in reply.content.config_records
    hist = protocol.histogram_arrays(reply.content)[protocol.HISTOGRAMS].numpy()
    # The root's histogram: per feature, every training row's gradient once, at margin -1.
    grad, hess = gradients(np.full(len(node.data.train.y), -1.0), node.data.train.y)
    assert hist.shape == (1, bin_layout(bins).total_bins, 2)
    np.testing.assert_allclose(
        hist[0, : bin_layout(bins).n_bins[0]].sum(axis=0), [grad.sum(), hess.sum()]
    )
    # A node that never saw the run's start refuses instead of guessing its margins.
    later = config.model_copy(update={"bins": None, "base_margin": None, "server_round": 2})
    fresh = Message(
        TreeLevelMessage(later, tree_record(request.tree, request.build)).to_content(),
        dst_node_id=101,
        message_type=protocol.HISTOGRAMS_TRAIN,
    )
    fresh.metadata.__dict__["_message_id"] = "m-hist-1"
    other = Context(
        7,
        101,
        NodeConfig(partition_id=1, num_partitions=3).values(),
        RecordDict(),
        settings.to_run_config(),
    )
    with pytest.raises(protocol.ProtocolError, match="lost its state"):
        app(fresh, other)  # the runtime turns this into the node's error reply

    grower.receive(hist)
    while (req := grower.request()) is not None:
        grower.receive(np.zeros((len(req.build), bin_layout(bins).total_bins, 2)))
    from jointcredit.models.trees import TreeEnsemble

    ensemble = TreeEnsemble(-1.0, bin_layout(bins).missing, (grower.tree(),))
    final = RoundConfig(
        preprocessing=spec.to_json(), server_round=3, bins=bins.to_json(), personal_trees=2
    )
    ev = Message(
        ModelMessage(ensemble_record(ensemble), final).to_content(),
        dst_node_id=100,
        message_type=MessageType.EVALUATE,
    )
    ev.metadata.__dict__["_message_id"] = "m-ev"
    m = _evaluate_metrics(app(ev, context))
    assert 0.5 < m.auc <= 1 and m.auc_personalized is not None and m.auc_personalized > 0.5
