"""Lossless federated trees: the coordinator's trees phase, fed by every institution's own
histogram handler (in process), grows the ensemble the central engine grows on the pooled
rows with the same bins: the same splits, leaf values within 1e-9."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from grid_helpers import AnsweringGrid, reply_from_node

from jointcredit.client import trees as client_trees
from jointcredit.client.data import NodeData
from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.data.frames import FederatedData
from jointcredit.federation import protocol
from jointcredit.federation.protocol import TreeLevelMessage
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import ArtifactError, load_artifact, save_artifact
from jointcredit.models.binning import BinningSpec
from jointcredit.models.learners import architecture
from jointcredit.models.learners.gbdt import TreeModule, tree_params
from jointcredit.models.preprocessing import PreprocessingSpec, agree, summarize
from jointcredit.models.trees import TreeEnsemble, TreeParams, base_margin, train
from jointcredit.models.trees.bins import bins_from_rows
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.trees.tree import CATEGORY_SPLIT, STRUCTURE
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import InstitutionGrid
from jointcredit.server.tree_sums import PlainSums
from jointcredit.server.trees import grow_federated
from jointcredit.trust.keys import load_private_key
from jointcredit.trust.keyset import create_key_set

pytestmark = pytest.mark.usefixtures("task_identity")  # Messages built outside a runtime


@cache
def _federation(dataset: str, institutions: int) -> FederatedData:
    return load_federation(
        DataConfig(dataset=dataset, institutions=institutions, synthetic_rows=600)
    )


def _spec(fed: FederatedData) -> PreprocessingSpec:
    """The preprocessing the federation agrees (from the institutions' summaries)."""
    summaries = [
        summarize(d.train.x, d.train.y, fed.schema, max_categories=64, min_count=5)
        for d in fed.institutions.values()
    ]
    return agree(summaries, fed.schema, max_categories=64, min_count=5)


def _bins(fed: FederatedData, max_bins: int) -> BinningSpec:
    """The fine bins the federation agrees (from the institutions' grid histograms)."""
    parts = [d.train.x for d in fed.institutions.values()]
    return bins_from_rows(parts, fed.schema, _spec(fed), max_bins)


class _Institutions:
    """Every institution's node: its rows, its Flower node state, its histogram handler.
    `processes`: how many worker processes take turns playing each node (each with its own
    caches, the node state shared), as simulation actors or deployment processes do."""

    def __init__(
        self, fed: FederatedData, lose_state_of: int | None = None, processes: int = 1
    ) -> None:
        self.processes = [
            {
                n: NodeData(data=d, schema=fed.schema)
                for n, d in enumerate(fed.institutions.values(), start=1)
            }
            for _ in range(processes)
        ]
        self.nodes = self.processes[0]
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
            for n in self.nodes
        }
        self.lose_state_of = lose_state_of
        self.answered = 0

    def answer(self, message: Message) -> RecordDict:
        node = message.metadata.dst_node_id
        self.answered += 1
        if node == self.lose_state_of and self.answered > 3 * len(self.nodes):
            self.contexts[node] = Context(1, node, {}, RecordDict(), {})  # a restarted node
        ins = TreeLevelMessage.from_content(message.content)
        # Turns that do not divide the levels of a tree, so processes see levels skipped.
        process = self.processes[(self.answered // 7) % len(self.processes)]
        return client_trees.histograms(ins, self.contexts[node], process[node])


def _federated(
    fed: FederatedData, settings: RunSettings, bins: BinningSpec, processes: int = 1
) -> TreeEnsemble:
    institutions = _Institutions(fed, processes=processes)
    grid = InstitutionGrid(AnsweringGrid(institutions.answer, nodes=institutions.nodes))
    pooled = fed.pooled_train()
    base = base_margin(float(pooled.y.sum()), len(pooled.y))
    params = tree_params(settings, fed.schema, bins.names)
    sums = PlainSums(grid, list(institutions.nodes), settings.round_timeout)
    run = grow_federated(sums, bins, params, base, lambda t, tree: {})
    assert run.timing.levels == len(
        [e for e in grid.exchanges if e.message_type == protocol.HISTOGRAMS_TRAIN]
    )
    assert [r.round for r in run.rounds] == list(range(1, settings.trees + 1))
    return run.ensemble


@pytest.mark.parametrize(
    ("dataset", "institutions", "config", "processes"),
    [
        # 20 lenders, depth 6: small nodes where two features make the same partition.
        ("sba", 0, {"trees": 5, "max-depth": 6, "max-bins": 64}, 1),
        (
            "synthetic",
            5,
            {"trees": 5, "max-depth": 4, "max-bins": 16, "reg-lambda": 3.0, "min-child-weight": 2},
            1,
        ),
        # Each node played by worker processes in turn, each with its own caches.
        ("sba", 4, {"trees": 4, "max-depth": 6, "max-bins": 32}, 3),
    ],
    ids=["sba", "synthetic", "sba-processes"],
)
def test_federated_trees_equal_the_central_engine_on_pooled_rows(
    dataset: str, institutions: int, config: dict[str, float], processes: int
) -> None:
    fed = _federation(dataset, institutions)
    settings = RunSettings.from_run_config({"model": "gbdt", **config})
    bins = _bins(fed, settings.max_bins)
    federated = _federated(fed, settings, bins, processes)
    pooled = fed.pooled_train()
    central = train(
        bins.codes(pooled.x),
        pooled.y,
        bin_layout(bins),
        tree_params(settings, fed.schema, bins.names),
    )
    assert federated.base_margin == central.base_margin
    assert len(federated.trees) == len(central.trees) == settings.trees
    for i, (f, c) in enumerate(zip(federated.trees, central.trees, strict=True)):
        for name in (*STRUCTURE, "left", "right"):
            assert np.array_equal(getattr(f, name), getattr(c, name)), f"tree {i}: {name}"
        np.testing.assert_allclose(f.value, c.value, rtol=0, atol=1e-9)
        np.testing.assert_allclose(f.cover, c.cover, rtol=1e-9)
    assert sum(t.n_nodes for t in federated.trees) > 4 * settings.trees  # real trees
    assert any(np.any(t.threshold == CATEGORY_SPLIT) for t in federated.trees)  # sets too
    if dataset == "synthetic":  # the bureau-style codes 96/98 took sides of their own
        assert any(np.any(t.special_left) for t in federated.trees)


def test_a_node_that_lost_its_margins_stops_the_run_naming_it() -> None:
    fed = _federation("synthetic", 3)
    settings = RunSettings.from_run_config({"model": "gbdt", "trees": 3, "max-depth": 2})
    bins = _bins(fed, 8)
    institutions = _Institutions(fed, lose_state_of=2)

    def answer(message: Message) -> RecordDict:
        try:
            return institutions.answer(message)
        except protocol.ProtocolError as exc:  # what the node's ClientApp reports as an error
            raise _NodeError(str(exc)) from exc

    grid = InstitutionGrid(_ErrorsAsReplies(answer, nodes=institutions.nodes))
    with pytest.raises(FederationError, match="lost its state"):
        grow_federated(
            PlainSums(grid, list(institutions.nodes), settings.round_timeout),
            bins,
            tree_params(settings, fed.schema, bins.names),
            0.0,
            lambda t, tree: {},
        )


class _NodeError(Exception):
    pass


class _ErrorsAsReplies(AnsweringGrid):
    """A node's exception comes back as an error reply, as Flower delivers it."""

    def reply(self, message: Message) -> Message:
        from flwr.app import Error

        try:
            return super().reply(message)
        except _NodeError as exc:
            shell = reply_from_node(message, RecordDict())  # the ids the runtime would set
            error = Message(Error(code=0, reason=str(exc)), reply_to=message)
            error.metadata.__dict__["_src_node_id"] = shell.metadata.src_node_id
            return error


def test_a_tree_artifact_scores_raw_rows_without_training_code(tmp_path: Path) -> None:
    fed = _federation("sba", 3)
    settings = RunSettings.from_run_config({"model": "gbdt", "trees": 4, "max-depth": 3})
    bins = _bins(fed, 16)
    pooled, test = fed.pooled_train(), fed.pooled_test()
    ensemble = train(
        bins.codes(pooled.x),
        pooled.y,
        bin_layout(bins),
        tree_params(settings, fed.schema, bins.names),
    )
    spec = _spec(fed)
    out = tmp_path / "model"
    trust = create_key_set(tmp_path / "keys", fed.ids, federation="test")
    save_artifact(
        out,
        stage="final",
        state=ensemble.to_arrays(),
        spec=spec,
        architecture=architecture("gbdt", len(bins.features)),
        schema=fed.schema,
        institutions=fed.ids,
        training=settings.to_run_config(),
        metrics={},
        created_at="2026-12-06T00:00:00+00:00",
        signer=load_private_key(tmp_path / "keys" / "coordinator.key"),
        trust=trust,
        provenance={"round": 4},
        bins=bins,
    )
    loaded = load_artifact(out, trust)
    expected = ensemble.predict_pd(bins.codes(test.x))
    np.testing.assert_allclose(loaded.predict_pd(test.x), expected, rtol=1e-12)
    assert loaded.bins == bins
    tree_model = loaded.model
    assert isinstance(tree_model, TreeModule)
    assert tree_model.ensemble.digest() == ensemble.digest()
    # The bins are signed like the weights: a changed edge is refused.
    (out / "bins.json").write_text((out / "bins.json").read_text().replace("[", "[-1e9,", 1))
    with pytest.raises(ArtifactError, match=r"bins\.json"):
        load_artifact(out, trust)


def test_shap_tree_explainer_takes_the_ensemble_as_a_custom_tree_model() -> None:
    """TreeSHAP (the `shap` library) on `TreeEnsemble.shap_model()`: its contributions add up
    to each row's log-odds (path-dependent and interventional), and internal nodes carry the
    cover-weighted mean of their children."""
    import shap

    fed = _federation("sba", 3)
    bins = _bins(fed, 16)
    pooled = fed.pooled_train()
    codes = bins.codes(pooled.x)
    ens = train(codes, pooled.y, bin_layout(bins), TreeParams(n_trees=5, max_depth=3))
    x = ens.shap_inputs(codes[:300])
    assert np.isnan(x).any()  # missing codes reach TreeSHAP as missing values
    explainer = shap.TreeExplainer(ens.shap_model())
    values = explainer.shap_values(x)
    # One column per feature, and one per (tree, categorical feature it splits by sets).
    assert values.shape == (300, len(ens.shap_columns.of_feature)) and x.shape == values.shape
    assert len(ens.shap_columns.of_feature) > len(bins.features)
    assert ens.shap_by_feature(values).shape == (300, len(bins.features))
    np.testing.assert_allclose(
        values.sum(axis=1) + explainer.expected_value, ens.margin(codes[:300]), atol=1e-9
    )
    background = shap.TreeExplainer(
        ens.shap_model(), data=x[:100], feature_perturbation="interventional"
    )
    np.testing.assert_allclose(
        background.shap_values(x[:30]).sum(axis=1) + background.expected_value,
        ens.margin(codes[:30]),
        atol=1e-6,
    )
    for t in ens.shap_model()["trees"]:
        w, v = t["node_sample_weight"], t["values"][:, 0]
        for n in np.flatnonzero(t["children_left"] >= 0):
            left, right = t["children_left"][n], t["children_right"][n]
            assert v[n] == pytest.approx((w[left] * v[left] + w[right] * v[right]) / w[n])


def test_a_numeric_split_reads_value_below_the_edge_of_its_threshold() -> None:
    """The agreed bins hold edges[i-1] <= v < edges[i]: a split `code <= t` sends exactly the
    values below edges[t] left, a value at an edge goes right, special values and missing
    have codes of their own after the regular ones."""
    import pandas as pd

    from jointcredit.models.binning import CategoricalBins, NumericBins

    bins = BinningSpec(
        features=[
            NumericBins(name="amount", edges=[10.0, 20.0], special=[98.0]),
            CategoricalBins(name="sector", groups=[["retail"], ["farm"], ["__other__"]]),
        ]
    )
    x = pd.DataFrame(
        {
            "amount": [5.0, 10.0, 15.0, 20.0, 99.0, 98.0, np.nan],
            "sector": ["retail", "farm", "mining", None, "retail", "farm", "farm"],
        }
    )
    codes = bins.codes(x)
    assert codes[:, 0].tolist() == [0, 1, 1, 2, 2, 3, 4]  # 3: the special 98; 4: missing
    assert codes[:, 1].tolist() == [0, 1, 2, 3, 0, 1, 1]  # 2: any other value; 3: missing
    layout = bin_layout(bins)
    assert layout.n_bins == (5, 4) and layout.missing == (4, 3)
    records = x.astype(object).where(x.notna(), None).to_dict("records")
    assert [bins.codes_record(r) for r in records] == codes.tolist()
    # On trained trees: every split on a regular amount is "amount < edges[t]".
    rng = np.random.default_rng(0)
    amount = rng.uniform(0, 30, 2000)
    y = (rng.random(2000) < np.where(amount < 10, 0.1, np.where(amount < 20, 0.5, 0.9))).astype(
        np.float64
    )
    data = pd.DataFrame({"amount": amount, "sector": "retail"})
    ens = train(bins.codes(data), y, layout, TreeParams(n_trees=1, max_depth=1))
    tree = ens.trees[0]
    assert tree.feature[0] == 0
    edge = bins.features[0].edges[int(tree.threshold[0])]  # type: ignore[union-attr]
    at_edge = pd.DataFrame({"amount": [edge, np.nextafter(edge, -np.inf)], "sector": "retail"})
    nodes = tree.route(bins.codes(at_edge), np.asarray(layout.missing))
    left = tree.route(np.array([[0, 0]]), np.asarray(layout.missing))[0]
    assert nodes[0] != left and nodes[1] == left


def test_an_artifact_with_the_retired_interim_bins_is_refused_clearly(tmp_path: Path) -> None:
    from pydantic import BaseModel

    class Interim(BaseModel):  # the stop-gap bins' format: numeric edges and levels
        features: list[dict[str, object]]

    fed = _federation("sba", 3)
    bins = _bins(fed, 8)
    old = Interim(
        features=[
            {"name": f.name, "kind": f.kind, "edges": [], "levels": []} for f in bins.features
        ]
    )
    trust = create_key_set(tmp_path / "keys", fed.ids, federation="test")
    ensemble = TreeEnsemble(0.0, bin_layout(bins).missing, ())
    save_artifact(
        tmp_path / "model",
        stage="final",
        state=ensemble.to_arrays(),
        spec=_spec(fed),
        architecture=architecture("gbdt", len(bins.features)),
        schema=fed.schema,
        institutions=fed.ids,
        training={},
        metrics={},
        created_at="2026-12-06T00:00:00+00:00",
        signer=load_private_key(tmp_path / "keys" / "coordinator.key"),
        trust=trust,
        provenance={"round": 1},
        bins=old,  # type: ignore[arg-type]
    )
    with pytest.raises(ArtifactError, match=r"interim format.*train the model again"):
        load_artifact(tmp_path / "model", trust)


def test_baselines_for_trees_xgboost_pooled_and_each_institution_alone() -> None:
    from jointcredit.simulations import tree_baselines

    fed = _federation("sba", 3)
    settings = RunSettings.from_run_config(
        {"model": "gbdt", "trees": 10, "max-depth": 3, "max-bins": 16}
    )
    bins = _bins(fed, settings.max_bins)
    layout = bin_layout(bins)
    codes = bins.codes(fed.pooled_test().x)
    x = tree_baselines.xgboost_inputs(codes, layout)
    assert np.array_equal(np.isnan(x), codes == np.asarray(layout.missing))
    central, local = tree_baselines.both(fed, bins, settings)
    assert central.auc is not None and central.auc > 0.65
    assert central.same_bins_auc is not None and central.same_bins_auc > 0.65
    # XGBoost reads the federation's bins: it grows the same trees as this engine.
    assert central.auc == pytest.approx(central.same_bins_auc, abs=1e-6)
    assert set(local.per_institution) == set(fed.ids)
    assert local.mean_own_auc is not None and local.mean_own_auc > 0.55


def test_membership_audit_of_a_tree_ensemble() -> None:
    from jointcredit.simulations.audit import membership_audit

    fed = _federation("sba", 3)
    settings = RunSettings.from_run_config({"model": "gbdt", "trees": 5, "max-depth": 3})
    bins = _bins(fed, 16)
    pooled = fed.pooled_train()
    params = tree_params(settings, fed.schema, bins.names)
    ensemble = train(bins.codes(pooled.x), pooled.y, bin_layout(bins), params)
    spec = _spec(fed)
    audit = membership_audit(fed, spec, TreeModule(ensemble), settings, references=2, bins=bins)
    assert audit.mia_auc is not None and 0.4 < audit.mia_auc < 0.7


def test_under_secagg_the_sums_of_fixed_point_digits_grow_the_same_trees() -> None:
    """Each level as the masked vectors of a SecAgg+ round would carry it (every institution's
    own secagg client, fixed-point digits; SecAgg+ itself: tests/test_trees_secagg.py): the
    same splits as the plain histograms, leaf values within what the rounding allows."""
    from jointcredit.client.secagg import _Institution
    from jointcredit.federation import fixed_point
    from jointcredit.server.tree_sums import SecureSums

    fed = _federation("synthetic", 4)
    settings = RunSettings.from_run_config(
        {"model": "gbdt", "trees": 3, "max-depth": 3, "max-bins": 16, "privacy": "secagg"}
    )
    bins = _bins(fed, settings.max_bins)
    params = tree_params(settings, fed.schema, bins.names)
    plain = _federated(fed, settings, bins)
    institutions = _Institutions(fed)
    clients = [
        _Institution(settings, node, institutions.contexts[n], None)  # type: ignore[arg-type]
        for n, node in institutions.nodes.items()
    ]
    lengths: list[int] = []

    def secure(length: int, config: dict[str, object]) -> np.ndarray:
        vectors = [client.fit([], config)[0][0] for client in clients]  # type: ignore[arg-type]
        assert all(v.shape == (length,) and v.max() < fixed_point.DIGIT_RANGE for v in vectors)
        lengths.append(length)
        return np.rint(np.sum(vectors, axis=0)).astype(np.int64)

    grid = InstitutionGrid(AnsweringGrid(institutions.answer, nodes=institutions.nodes))
    base = plain.base_margin
    run = grow_federated(
        SecureSums(grid, list(institutions.nodes), secure), bins, params, base, lambda t, x: {}
    )
    assert len(lengths) == run.timing.levels and not grid.exchanges  # nothing sent in clear
    # Each bin's sum is within n * 2^-33 of the exact one; a node's sum adds at most B bins
    # (B = the largest feature's bin count) and a derived sibling subtracts two such sums,
    # so the gradient and hessian sums are within e = 2 B n 2^-33. A leaf value -eta G/(H +
    # lambda) then moves by at most eta e (1 + |w| / eta) / lambda, and each tree's error
    # feeds the next one's gradients: over T trees T times that.
    e = 2 * max(bin_layout(bins).n_bins) * len(clients) * fixed_point.STEP_ERROR
    largest = max(float(np.max(np.abs(t.value))) for t in plain.trees)
    eta, lam = params.learning_rate, params.reg_lambda
    tolerance = settings.trees * eta * e * (1 + largest / eta) / lam
    assert tolerance < 1e-6, tolerance
    for i, (s, p) in enumerate(zip(run.ensemble.trees, plain.trees, strict=True)):
        for name in (*STRUCTURE, "left", "right"):
            assert np.array_equal(getattr(s, name), getattr(p, name)), f"tree {i}: {name}"
        np.testing.assert_allclose(s.value, p.value, rtol=0, atol=tolerance)
    pairs = zip(run.ensemble.trees, plain.trees, strict=True)
    assert not all(np.array_equal(s.value, p.value) for s, p in pairs)  # really rounded
