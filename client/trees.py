"""The institution's side of the gradient-boosted trees: one histogram reply per tree level.

Between levels the node keeps its rows' margins after the trees finished so far (Flower's
node state), with the digest of those trees: each request names the ensemble it builds on,
and the first level of a tree carries the tree finished last, which the node adds to its
margins only if it extends exactly the ensemble its margins belong to. A node that lost its
state, or got out of step, fails loudly instead of sending histograms of other margins.

What leaves: for each node the coordinator asks about, per feature and bin, the sum of the
gradients and of the hessians of this institution's rows there. No row leaves, but such sums
are revealing (a bin holding one row gives away its label, hessians give counts):
docs/PRIVACY.md.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict
from sklearn.metrics import log_loss

from jointcredit.client.data import NodeData
from jointcredit.federation import protocol
from jointcredit.federation.protocol import (
    HistogramMetrics,
    ModelMessage,
    TreeLevelMessage,
    TreeRunState,
)
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import BinningSpec
from jointcredit.models.learners.gbdt import tree_params
from jointcredit.models.trees import boost
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.trees.exchange import ensemble_of, histogram_record, tree_of
from jointcredit.models.trees.grower import LevelRequest
from jointcredit.models.trees.tree import EMPTY_ENSEMBLE, chain_digest

_BINS: dict[str, BinningSpec] = {}


def _bins(text: str) -> BinningSpec:
    if text not in _BINS:
        _BINS.clear()  # one run's bins at a time
        _BINS[text] = BinningSpec.model_validate_json(text)
    return _BINS[text]


def _run_state(context: Context) -> TreeRunState | None:
    run = context.state.config_records.get(protocol.STATE_TREE_RUN)
    return None if run is None else TreeRunState.parse(run, "tree state")


def _stored_margins(context: Context) -> np.ndarray:
    record = context.state.array_records.get(protocol.STATE_TREE_MARGINS)
    if record is None:
        raise protocol.ProtocolError("the node's tree state has no margins")
    return record[protocol.MARGINS].numpy()


def _keep(context: Context, run: TreeRunState, margins: np.ndarray) -> None:
    context.state[protocol.STATE_TREE_RUN] = ConfigRecord(run.values())
    context.state[protocol.STATE_TREE_MARGINS] = ArrayRecord(
        array_dict={protocol.MARGINS: Array(margins)}
    )


def _gradients(
    ins: TreeLevelMessage, context: Context, node: NodeData
) -> tuple[BinningSpec, np.ndarray, np.ndarray]:
    """The bins, and this node's gradients and hessians at the margins of the ensemble the
    request builds on."""
    cfg = ins.config
    y = node.data.train.y
    if cfg.bins is not None:  # the run's first request: start from the base margin
        if cfg.base_margin is None:
            raise protocol.ProtocolError("the first tree request needs its base margin")
        if _bins(cfg.bins).digest() != cfg.bins_digest:
            raise protocol.ProtocolError("the bins do not match their digest")
        run = TreeRunState(
            bins=cfg.bins, bins_digest=cfg.bins_digest, ensemble=EMPTY_ENSEMBLE.hex()
        )
        _keep(context, run, np.full(len(y), cfg.base_margin))
    stored = _run_state(context)
    if stored is None or stored.bins_digest != cfg.bins_digest:
        raise protocol.ProtocolError(
            "no tree state for these bins: the node lost its state or missed the run's start"
        )
    bins = _bins(stored.bins)
    if stored.ensemble != cfg.ensemble:
        if ins.previous is None:
            raise protocol.ProtocolError("the request builds on trees this node has not seen")
        previous, _ = tree_of(ins.previous)
        if chain_digest(bytes.fromhex(stored.ensemble), previous).hex() != cfg.ensemble:
            raise protocol.ProtocolError("this node's margins belong to another ensemble")
        codes = node.codes(bins, "train")
        margins = _stored_margins(context) + previous.predict(
            codes, np.asarray(bin_layout(bins).missing)
        )
        run = TreeRunState(bins=stored.bins, bins_digest=cfg.bins_digest, ensemble=cfg.ensemble)
        _keep(context, run, margins)
    key = f"{cfg.bins_digest}:{cfg.ensemble}"
    if key not in node.tree_gradients:
        node.tree_gradients.clear()
        node.tree_gradients[key] = boost.gradients(_stored_margins(context), y.astype(np.float64))
    grad, hess = node.tree_gradients[key]
    return bins, grad, hess


def level_histograms(
    ins: TreeLevelMessage, context: Context, node: NodeData
) -> tuple[np.ndarray, HistogramMetrics]:
    """This node's gradient and hessian histograms for the nodes the level asks about, with
    the rows behind them and the seconds the work took."""
    started = time.perf_counter()
    bins, grad, hess = _gradients(ins, context, node)
    layout = bin_layout(bins)
    codes = node.codes(bins, "train")
    tree, build = tree_of(ins.tree)
    if build is None:
        raise protocol.ProtocolError("a tree level request must name the nodes to build")
    key = f"{ins.config.bins_digest}:{ins.config.ensemble}"
    if key not in node.tree_routing:
        node.tree_routing.clear()
        node.tree_routing[key] = boost.Routing()
    hist = boost.level_histograms(
        LevelRequest(ins.config.level, build, tree),
        codes,
        node.flat_codes(bins),
        grad,
        hess,
        layout,
        node.tree_routing[key],
    )
    metrics = HistogramMetrics(
        num_examples=len(grad), histogram_seconds=time.perf_counter() - started
    )
    return hist, metrics


def histograms(ins: TreeLevelMessage, context: Context, node: NodeData) -> RecordDict:
    hist, metrics = level_histograms(ins, context, node)
    return protocol.histogram_reply(node.institution, histogram_record(hist), metrics)


def training_pds(ins: ModelMessage, node: NodeData) -> np.ndarray:
    """The final ensemble's probability of default for this node's training rows."""
    if ins.config.bins is None:
        raise protocol.ProtocolError("a tree ensemble to score needs its bins")
    return ensemble_of(ins.arrays).predict_pd(node.codes(_bins(ins.config.bins), "train"))


def evaluation_pds(
    ins: ModelMessage, node: NodeData, settings: RunSettings
) -> tuple[np.ndarray, np.ndarray | None]:
    """The final ensemble's probability of default for this node's test rows, and (when the
    coordinator asks for personal trees) that of the ensemble plus this institution's own
    extra trees, grown on its training rows' residuals with the run's parameters. As Ditto
    does, the extra trees are kept only if, grown on 80 % of the training rows, they lower the
    log-loss on the other 20 % (then grown again on all of them); else the global ensemble
    stands."""
    if ins.config.bins is None:
        raise protocol.ProtocolError("a tree ensemble to evaluate needs its bins")
    bins = _bins(ins.config.bins)
    ensemble = ensemble_of(ins.arrays)
    test = node.codes(bins, "test")
    extra = ins.config.personal_trees
    if not extra:
        return ensemble.predict_pd(test), None
    params = replace(tree_params(settings, node.schema, bins.names), n_trees=extra)
    y = node.data.train.y.astype(np.float64)
    codes = node.codes(bins, "train")
    fit, val = node.validation_split(settings.seed)
    trial = boost.train(codes[fit], y[fit], bin_layout(bins), params, start=ensemble)
    loss = [log_loss(y[val], m.predict_pd(codes[val]), labels=[0, 1]) for m in (trial, ensemble)]
    if loss[0] >= loss[1]:
        return ensemble.predict_pd(test), ensemble.predict_pd(test)
    own = boost.train(codes, y, bin_layout(bins), params, start=ensemble)
    return ensemble.predict_pd(test), own.predict_pd(test)
