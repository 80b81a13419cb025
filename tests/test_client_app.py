"""The ClientApp in-process, with real Flower messages (no Ray, no SuperLink)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from jointcredit.client.app import app
from jointcredit.data.catalog import resolve
from jointcredit.models import control
from jointcredit.models.nets import architecture, build_model
from jointcredit.models.preprocessing import InstitutionSummary, agree
from jointcredit.models.settings import RunSettings
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
        node_config={"partition-id": partition, "num-partitions": 3},
        state=RecordDict(),
        run_config={**SETTINGS.to_run_config(), "keys-dir": str(KEYS[0])},
    )


def _send(content: RecordDict, mtype: str, partition: int) -> Message:
    msg = Message(content, dst_node_id=100 + partition, message_type=mtype)
    msg.metadata.__dict__["_message_id"] = f"m-{mtype}-{partition}"  # as the runtime would
    return app(msg, _context(partition))


@pytest.mark.usefixtures("task_identity")
def test_query_train_evaluate_round_trip() -> None:
    cfg = ConfigRecord({"max-categories": 64, "min-category-count": 5})
    replies = [_send(RecordDict({"config": cfg}), MessageType.QUERY, p) for p in range(3)]
    insts = [str(r.content["identity"]["institution"]) for r in replies]
    assert len(set(insts)) == 3
    summaries = [
        InstitutionSummary.model_validate_json(str(r.content["summary"]["json"])) for r in replies
    ]
    from jointcredit.data.schema import Schema

    schema = Schema.model_validate_json(str(replies[0].content["summary"]["schema"]))
    # Only aggregates leave the node: no raw rows, just counts and sums.
    assert all(s.rows > 0 for s in summaries)
    spec = agree(summaries, schema, max_categories=64, min_count=5)

    model = build_model(architecture("logreg", spec.n_outputs), seed=0)
    arrays = ArrayRecord(model.state_dict())
    train_cfg = ConfigRecord({"preprocessing": spec.to_json(), "server-round": 1})
    reply = _send(RecordDict({"arrays": arrays, "config": train_cfg}), MessageType.TRAIN, 0)
    assert not reply.has_error()
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == summaries[0].rows
    assert 0 < float(metrics["train-loss"]) < 1
    new = reply.content["arrays"].to_torch_state_dict()
    assert not all((new[k] == model.state_dict()[k]).all() for k in new)  # it trained

    # Same seed, same round, same data: the update is bit-identical.
    again = _send(RecordDict({"arrays": arrays, "config": train_cfg}), MessageType.TRAIN, 0)
    again_state = again.content["arrays"].to_torch_state_dict()
    assert all((new[k] == again_state[k]).all() for k in new)

    eval_cfg = ConfigRecord(
        {"preprocessing": spec.to_json(), "server-round": 2, "finetune-epochs": 1}
    )
    ev = _send(
        RecordDict({"arrays": reply.content["arrays"], "config": eval_cfg}), MessageType.EVALUATE, 0
    )
    m = ev.content["metrics"]
    assert 0.5 < float(m["auc"]) <= 1 and not math.isnan(float(m["auc-personalized"]))
    assert set(m) >= {"auc", "ks", "brier", "num-examples", "auc-personalized"}
    # Every reply left the node signed.
    assert all(SIGNATURE_RECORD in r.content.config_records for r in [*replies, reply, ev])


@pytest.mark.usefixtures("task_identity")
def test_prior_query_and_hierarchical_personalisation() -> None:
    """`query.prior` returns signed squared deviations, one per parameter; the final evaluate
    message with the federation's sum personalises under that prior (no Ditto strength), and a
    sum that does not fit the model is an error, not a silent Ditto."""
    from jointcredit.models.personalize import PRIOR, PRIOR_COUNT

    spec, n = _spec()
    arrays = ArrayRecord(build_model(architecture("logreg", n), seed=0).state_dict())
    cfg = ConfigRecord({"preprocessing": spec})
    replies = [
        _send(RecordDict({"arrays": arrays, "config": cfg}), "query.prior", p) for p in range(3)
    ]
    assert all(SIGNATURE_RECORD in r.content.config_records for r in replies)
    devs = [r.content.array_records[PRIOR] for r in replies]
    assert all(set(d.keys()) == {"linear.weight", "linear.bias"} for d in devs)
    assert all((d["linear.weight"].numpy() >= 0).all() for d in devs)
    assert devs[0]["linear.weight"].numpy().shape == (1, n)
    assert not np.array_equal(devs[0]["linear.weight"].numpy(), devs[1]["linear.weight"].numpy())
    total = ArrayRecord(
        {k: Array(sum(d[k].numpy() for d in devs)) for k in ("linear.weight", "linear.bias")}
    )

    def evaluate(prior: ArrayRecord) -> Message:
        ev_cfg = ConfigRecord(
            {"preprocessing": spec, "server-round": 2, "finetune-epochs": 1, PRIOR_COUNT: 3}
        )
        content = RecordDict({"arrays": arrays, "config": ev_cfg, PRIOR: prior})
        return _send(content, MessageType.EVALUATE, 0)

    m = evaluate(total).content["metrics"]
    assert float(m["auc-personalized"]) > float(m["auc"]) and "personalized-mu" not in m
    # A node that kept its query.prior answer in its state uses it; one that lost its state
    # recomputes the same deviation: the same personalised model.
    ctx = _context(0)
    query = Message(
        RecordDict({"arrays": arrays, "config": cfg}), dst_node_id=100, message_type="query.prior"
    )
    query.metadata.__dict__["_message_id"] = "m-prior-kept"
    app(query, ctx)
    assert PRIOR in ctx.state.array_records
    ev_cfg = ConfigRecord(
        {"preprocessing": spec, "server-round": 2, "finetune-epochs": 1, PRIOR_COUNT: 3}
    )
    ev = Message(
        RecordDict({"arrays": arrays, "config": ev_cfg, PRIOR: total}),
        dst_node_id=100,
        message_type=MessageType.EVALUATE,
    )
    ev.metadata.__dict__["_message_id"] = "m-eval-kept"
    assert app(ev, ctx).content["metrics"]["auc-personalized"] == m["auc-personalized"]
    # (and it is the kept one that is used: a different kept deviation changes the prior)
    kept = ctx.state.array_records[PRIOR]
    ctx.state[PRIOR] = ArrayRecord({k: Array(kept[k].numpy() * 0) for k in kept})
    ev.metadata.__dict__["_message_id"] = "m-eval-zeroed"
    assert app(ev, ctx).content["metrics"]["auc-personalized"] != m["auc-personalized"]
    with pytest.raises(ValueError, match="prior totals"):
        evaluate(ArrayRecord({"linear.weight": total["linear.weight"]}))


@pytest.mark.usefixtures("task_identity")
def test_bad_preprocessing_is_an_error_not_a_silent_result() -> None:
    model = build_model(architecture("logreg", 3), seed=0)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "config": ConfigRecord({"preprocessing": "{}", "server-round": 1}),
        }
    )
    with pytest.raises(ValueError):
        _send(content, MessageType.TRAIN, 1)


def _spec() -> tuple[str, int]:
    cfg = ConfigRecord({"max-categories": 64, "min-category-count": 5})
    replies = [_send(RecordDict({"config": cfg}), MessageType.QUERY, p) for p in range(3)]
    from jointcredit.data.schema import Schema

    schema = Schema.model_validate_json(str(replies[0].content["summary"]["schema"]))
    summaries = [
        InstitutionSummary.model_validate_json(str(r.content["summary"]["json"])) for r in replies
    ]
    spec = agree(summaries, schema, max_categories=64, min_count=5)
    return spec.to_json(), spec.n_outputs


@pytest.mark.usefixtures("task_identity")
def test_scaffold_control_variate_is_kept_by_the_institution_between_rounds() -> None:
    spec, n = _spec()
    model = ArrayRecord(build_model(architecture("logreg", n), seed=0).state_dict())
    context = _context(0)

    def train_msg(arrays: ArrayRecord, server_round: int, ctx: Context) -> Message:
        cfg = ConfigRecord({"preprocessing": spec, "server-round": server_round})
        msg = Message(
            RecordDict({"arrays": arrays, "config": cfg}),
            dst_node_id=100,
            message_type=MessageType.TRAIN,
        )
        msg.metadata.__dict__["_message_id"] = f"m-train-{server_round}"
        reply = app(msg, ctx)
        assert not reply.has_error()
        return reply

    first = train_msg(control.join(model, control.zeros(model)), 1, context)
    trained, c_i = control.split(first.content["arrays"])  # type: ignore[arg-type]
    assert set(c_i.keys()) == set(model.keys())
    assert any(np.abs(a.numpy()).max() > 0 for a in c_i.values())  # a real mean gradient
    assert context.state[control.STATE_KEY] == c_i  # kept where the next round finds it
    assert first.content["metrics"]["scaffold-own-control"] == 0.0

    # Round 2 with c equal to this institution's own c_i: the correction c - c_i is zero,
    # so the update equals plain training; a node that lost its c_i would be pulled by c.
    with_own = train_msg(control.join(trained, c_i), 2, context)
    plain = train_msg(trained, 2, _context(0))
    forgetful = train_msg(control.join(trained, c_i), 2, _context(0))
    assert with_own.content["metrics"]["scaffold-own-control"] == 1.0
    assert forgetful.content["metrics"]["scaffold-own-control"] == 0.0
    got = control.split(with_own.content["arrays"])[0]  # type: ignore[arg-type]
    assert all(np.array_equal(got[k].numpy(), plain.content["arrays"][k].numpy()) for k in got)  # type: ignore[index]
    other = control.split(forgetful.content["arrays"])[0]  # type: ignore[arg-type]
    assert not all(np.array_equal(got[k].numpy(), other[k].numpy()) for k in got)
