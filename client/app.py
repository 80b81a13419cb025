"""The institution's ClientApp: its rows stay here, only aggregates and model updates leave.

Message handlers (the messages are `jointcredit.federation.protocol`'s):
- `query`: summarise own training rows for federated preprocessing (counts, sums, bounded
  category counts; `jointcredit.models.preprocessing`).
- `query.bin_grid`, `query.bin_counts` (models on agreed bins): own training values counted
  over the agreed fine grid, then good/bad rows per agreed bin (`jointcredit.models.binning`).
- `train`: train the global model on own rows and return the updated weights
  (`client.update`): FedProx term, SCAFFOLD drift correction (`client.scaffold`), DP-SGD with
  an enforced budget (`client.record_dp`), a simulated poisoning attack.
- `query.prior`: how far this institution's own fit strays from the final global model, per
  coefficient (squared), for the hierarchical personalisation prior (`client.personalization`).
- `train.histograms` (gradient-boosted trees): per tree level, gradient and hessian
  histograms of own rows for the nodes asked about (`client.trees`).
- `query.reference`: after training, own training rows per score band of the final model and
  per feature bin, as counts (`client.reference`).
- `evaluate`: score own test rows; in the final round also personalise a copy first.
- `query.fairness_groups`, `query.fairness_counts` (schemas with protected attributes): the
  groups its test rows hold, then its counts per group, label and score of the final model
  (`client.fairness`).
Every reply names its institution, so the coordinator can order replies and report per
institution, and is signed on the way out by the outermost mod (`client.signing`).
"""

from __future__ import annotations

import json

import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from pydantic import BaseModel

from jointcredit.client import (
    binning,
    fairness,
    personalization,
    reference,
    scaffold,
    trees,
    vertical_app,
)
from jointcredit.client.adversary import adversary_mod
from jointcredit.client.data import NodeData, node_data
from jointcredit.client.durable import Durable
from jointcredit.client.faults import fault_mod
from jointcredit.client.signing import signing_key, signing_mod
from jointcredit.client.update import local_update
from jointcredit.federation import protocol, vertical
from jointcredit.federation.protocol import (
    BinningRecord,
    EvaluateMetrics,
    FairnessGroupsRecord,
    ModelMessage,
    ReferenceQuery,
    ReferenceRecord,
    SummaryRecord,
    TreeLevelMessage,
)
from jointcredit.federation.settings import RunSettings
from jointcredit.federation.vertical import is_vertical
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.preprocessing import summarize
from jointcredit.models.score_bands import band_counts
from jointcredit.models.scorecard import ScoreScale
from jointcredit.models.training import predict_pd


def layout_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A vertical run (`layout = "vertical"`) is the vertical ClientApp's, with its own
    signing (`client.vertical_app`): one ClientApp for both, as a deployed node runs only
    this one."""
    if is_vertical(dict(context.run_config)):
        return vertical_app.app(msg, context)
    return call_next(msg, context)


# Small models on 2 cores: one intra-op thread per client avoids oversubscription. In
# deployment each message runs in a fork of the node's worker, which imported this module
# once; optional stacks (Opacus, Flower's legacy SecAgg+ client) are imported, per message,
# only by the runs that use them.
torch.set_num_threads(1)

# Mods run outermost first: signing wraps the handlers (and any handler-specific mods), so it
# signs exactly what leaves; the simulation-only adversary sits outside it, as a network
# attacker or a dishonest node's own code would; a simulated crash (`faults`) outside both,
# as the node's whole process failing.
app = ClientApp(mods=[layout_mod, fault_mod, adversary_mod, signing_mod])


@app.query(vertical.HELLO_ACTION)
@app.query(vertical.PSI_ACTION)
@app.train(vertical.STEP_ACTION)
@app.train(vertical.SERVE_ACTION)
def vertical_only(msg: Message, context: Context) -> Message:
    """Registered so that Flower routes the vertical kinds to this app (and its layout mod);
    reached only in a horizontal run."""
    raise protocol.ProtocolError(f"{msg.metadata.message_type} in a horizontal run")


def _setup(context: Context) -> tuple[RunSettings, NodeData]:
    settings = RunSettings.from_run_config(context.run_config)
    return settings, node_data(dict(context.node_config), settings)


@app.query()
def query(msg: Message, context: Context) -> Message:
    _, node = _setup(context)
    asked = protocol.parse_summary_query(msg.content)
    summary = summarize(
        node.data.train.x,
        node.data.train.y,
        node.schema,
        max_categories=asked.max_categories,
        min_count=asked.min_category_count,
    )
    record = SummaryRecord(
        summary=summary.model_dump_json(), data_schema=node.schema.model_dump_json()
    )
    return Message(protocol.summary_reply(node.institution, record), reply_to=msg)


@app.query(protocol.BIN_GRID_ACTION)
def bin_grid(msg: Message, context: Context) -> Message:
    _, node = _setup(context)
    digits = protocol.parse_bin_grid_query(msg.content).grid_digits
    return _binning_reply(msg, node, binning.histogram(node, digits))


@app.query(protocol.BIN_COUNTS_ACTION)
def bin_counts(msg: Message, context: Context) -> Message:
    _, node = _setup(context)
    bins = protocol.parse_bin_counts_query(msg.content).bins
    return _binning_reply(msg, node, binning.counts(node, bins))


def _binning_reply(msg: Message, node: NodeData, answer: BaseModel) -> Message:
    record = BinningRecord(payload=answer.model_dump_json())
    return Message(protocol.binning_reply(node.institution, record), reply_to=msg)


@app.query(protocol.FAIRNESS_GROUPS_ACTION)
def fairness_groups(msg: Message, context: Context) -> Message:
    _, node = _setup(context)
    asked = protocol.parse_fairness_groups_query(msg.content)
    record = FairnessGroupsRecord(payload=json.dumps(fairness.groups(node, asked.protected)))
    return Message(protocol.fairness_groups_reply(node.institution, record), reply_to=msg)


@app.query(protocol.FAIRNESS_COUNTS_ACTION)
def fairness_counts(msg: Message, context: Context) -> Message:
    settings, node = _setup(context)
    ins, query = protocol.parse_fairness_counts_query(msg.content)
    vector = fairness.counts(ins, query, node, settings)
    return Message(protocol.fairness_counts_reply(node.institution, vector), reply_to=msg)


@app.query(protocol.PRIOR_ACTION)
def prior_query(msg: Message, context: Context) -> Message:
    settings, node = _setup(context)
    ins = ModelMessage.from_content(msg.content)
    model, _ = node.model(ins, settings)
    deviation = personalization.deviation_for_prior(model, node.spec(ins), node, context)
    return Message(protocol.prior_reply(node.institution, deviation), reply_to=msg)


@app.query(protocol.REFERENCE_ACTION)
def reference_query(msg: Message, context: Context) -> Message:
    """After training: own training rows per score band and feature bin (counts only)."""
    settings, node = _setup(context)
    ins, query = protocol.parse_reference_query(msg.content)
    record = _reference_record(ins, query, node, settings)
    return Message(protocol.reference_reply(node.institution, record), reply_to=msg)


def _reference_record(
    ins: ModelMessage, query: ReferenceQuery, node: NodeData, settings: RunSettings
) -> ReferenceRecord:
    counts = reference.reference_counts(ins, query, node, settings)
    return ReferenceRecord(counts=json.dumps([int(c) for c in counts]))


def institution_clipping_mod(
    msg: Message, context: Context, call_next: ClientAppCallable
) -> Message:
    """Flower's `fixedclipping_mod` when the coordinator asks for client-side clipping
    (institution-level DP sends the clipping norm in the train config); otherwise nothing.
    On the training handler only (app-wide it breaks evaluate: see Flower's notes), and
    inside the signing mod, so the signature covers the clipped update."""
    config = protocol.round_config(msg.content)
    if config is not None and config.clipping_norm is not None:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


@app.train(mods=[institution_clipping_mod])
def train_handler(msg: Message, context: Context) -> Message:
    settings, node = _setup(context)
    if settings.privacy == "secagg":
        # Every SecAgg+ stage arrives as a train message; Flower's secaggplus_mod runs the
        # protocol and calls `local_update` (through a NumPyClient) at the masking stage.
        from jointcredit.client.secagg import secagg_train  # Flower's legacy stack: only here

        return secagg_train(msg, context, settings, node, local_update)
    ins = ModelMessage.from_content(msg.content)
    durable = None
    if settings.privacy == "dp-record" or settings.strategy == "scaffold":
        # What must survive a crash (DP ledger, c_i): back from disk if the Flower state lost it.
        key = signing_key(context, node.institution)
        durable = Durable(context, settings, node.institution, ins.config, key)
        durable.restore()
    model, federation_control = node.model(ins, settings)
    drift, own_control = None, None
    if federation_control:
        drift, own_control = scaffold.drift_control(model, federation_control, context)
    if ins.config.server_round is None:
        raise protocol.ProtocolError("a train message needs its server round")
    update = local_update(
        model,
        node.spec(ins),
        settings,
        node,
        context,
        server_round=ins.config.server_round,
        mu=ins.config.proximal_mu or 0.0,
        drift=drift,
        persist=None if durable is None else durable.save,
    )
    metrics = update.metrics
    arrays: ArrayRecord | None = None
    if not update.withheld:
        arrays = ArrayRecord(model.state_dict())
        if drift is not None:
            # Reported so the coordinator can tell a node that lost its state (restarted,
            # moved) from one that corrects with its own c_i.
            metrics = metrics.model_copy(
                update={"scaffold_own_control": 1.0 if own_control else 0.0}
            )
            arrays = scaffold.keep_and_join(model, drift, arrays, context)
            if durable is not None:
                durable.save()
    return Message(protocol.train_reply(node.institution, metrics, arrays), reply_to=msg)


@app.train(protocol.HISTOGRAMS_ACTION)
def histograms_handler(msg: Message, context: Context) -> Message:
    """Gradient-boosted trees: this institution's histograms for one tree level."""
    _, node = _setup(context)
    content = trees.histograms(TreeLevelMessage.from_content(msg.content), context, node)
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate_handler(msg: Message, context: Context) -> Message:
    settings, node = _setup(context)
    ins = ModelMessage.from_content(msg.content)
    y_test = node.data.test.y
    if settings.model == "gbdt":
        pd_global, pd_own = trees.evaluation_pds(ins, node, settings)
        m = risk_metrics(y_test, pd_global)
        goods, bads = band_counts(y_test, pd_global, ScoreScale())
        metrics = EvaluateMetrics(
            num_examples=len(y_test), auc=_nan(m.auc), ks=_nan(m.ks), brier=_nan(m.brier),
            score_band_goods=goods, score_band_bads=bads,
        )  # fmt: skip
        if pd_own is not None:
            p = risk_metrics(y_test, pd_own)
            metrics = metrics.model_copy(
                update={
                    "auc_personalized": _nan(p.auc),
                    "ks_personalized": _nan(p.ks),
                    "brier_personalized": _nan(p.brier),
                }
            )
        return Message(protocol.evaluate_reply(node.institution, metrics), reply_to=msg)
    model, _ = node.model(ins, settings)
    spec = node.spec(ins)
    x_test = node.matrix(spec, "test")
    pd_global = predict_pd(model, x_test)
    m = risk_metrics(y_test, pd_global)
    goods, bads = band_counts(y_test, pd_global, ScoreScale())
    metrics = EvaluateMetrics(
        num_examples=len(y_test),
        auc=_nan(m.auc),
        ks=_nan(m.ks),
        brier=_nan(m.brier),
        score_band_goods=goods,
        score_band_bads=bads,
        # Institution-level DP: the strategy checks its weight key on every reply.
        unit_weight=1.0 if settings.privacy == "dp-institution" else None,
    )
    if ins.config.finetune_epochs:
        chosen = personalization.personalize_final(ins, context, settings, node, model)
        p = risk_metrics(y_test, predict_pd(chosen.model, x_test))
        metrics = metrics.model_copy(
            update={
                "auc_personalized": _nan(p.auc),
                "ks_personalized": _nan(p.ks),
                "brier_personalized": _nan(p.brier),
                # Ditto's chosen strength; -1: the global model won.
                "personalized_mu": None
                if chosen.method == "hierarchical"
                else (-1.0 if chosen.mu is None else chosen.mu),
            }
        )
    reply = protocol.evaluate_reply(node.institution, metrics)
    asked = protocol.asked_reference(msg.content)  # the final evaluation, outside secagg/DP
    if asked is not None:
        protocol.add_reference(reply, _reference_record(ins, asked, node, settings))
    return Message(reply, reply_to=msg)


def _nan(v: float | None) -> float:
    return float("nan") if v is None else v
