"""Lossless federated trees: the coordinator's trees phase, fed by every institution's own
histogram handler (in process), grows the ensemble the central engine grows on the pooled
rows with the same bins: the same splits, leaf values within 1e-9."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from grid_helpers import AnsweringGrid

from jointcredit.client import trees as client_trees
from jointcredit.client.data import NodeData
from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.data.frames import FederatedData
from jointcredit.federation import protocol
from jointcredit.federation.protocol import TreeLevelMessage
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import ArtifactError, load_artifact, save_artifact
from jointcredit.models.learners import architecture
from jointcredit.models.learners.gbdt import TreeModule, tree_params
from jointcredit.models.preprocessing import PreprocessingSpec, agree, summarize
from jointcredit.models.trees import TreeEnsemble, TreeParams, base_margin, train
from jointcredit.models.trees.interim_bins import TreeBins, agree_bins
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import InstitutionGrid
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


def _bins(fed: FederatedData, max_bins: int) -> TreeBins:
    return agree_bins(_spec(fed), max_bins)


class _Institutions:
    """Every institution's node: its rows, its Flower node state, its histogram handler."""

    def __init__(self, fed: FederatedData, lose_state_of: int | None = None) -> None:
        self.nodes = {
            n: NodeData(data=d, schema=fed.schema)
            for n, d in enumerate(fed.institutions.values(), start=1)
        }
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
        return client_trees.histograms(ins, self.contexts[node], self.nodes[node])


def _federated(fed: FederatedData, settings: RunSettings, bins: TreeBins) -> TreeEnsemble:
    institutions = _Institutions(fed)
    grid = InstitutionGrid(AnsweringGrid(institutions.answer, nodes=institutions.nodes))
    pooled = fed.pooled_train()
    base = base_margin(float(pooled.y.sum()), len(pooled.y))
    params = tree_params(settings, fed.schema, bins.names)
    run = grow_federated(
        grid, list(institutions.nodes), settings, bins, params, base, lambda t, tree: {}
    )
    assert run.timing.levels == len(
        [e for e in grid.exchanges if e.message_type == protocol.HISTOGRAMS_TRAIN]
    )
    assert [r.round for r in run.rounds] == list(range(1, settings.trees + 1))
    return run.ensemble


@pytest.mark.parametrize(
    ("dataset", "institutions", "config"),
    [
        # 20 lenders, depth 6: small nodes where two features make the same partition.
        ("sba", 0, {"trees": 5, "max-depth": 6, "max-bins": 64}),
        (
            "synthetic",
            5,
            {"trees": 5, "max-depth": 4, "max-bins": 16, "reg-lambda": 3.0, "min-child-weight": 2},
        ),
    ],
    ids=["sba", "synthetic"],
)
def test_federated_trees_equal_the_central_engine_on_pooled_rows(
    dataset: str, institutions: int, config: dict[str, float]
) -> None:
    fed = _federation(dataset, institutions)
    settings = RunSettings.from_run_config({"model": "gbdt", **config})
    bins = _bins(fed, settings.max_bins)
    federated = _federated(fed, settings, bins)
    pooled = fed.pooled_train()
    central = train(
        bins.codes(pooled.x),
        pooled.y,
        bins.layout(),
        tree_params(settings, fed.schema, bins.names),
    )
    assert federated.base_margin == central.base_margin
    assert len(federated.trees) == len(central.trees) == settings.trees
    for i, (f, c) in enumerate(zip(federated.trees, central.trees, strict=True)):
        for name in ("feature", "threshold", "default_left", "left", "right"):
            assert np.array_equal(getattr(f, name), getattr(c, name)), f"tree {i}: {name}"
        np.testing.assert_allclose(f.value, c.value, rtol=0, atol=1e-9)
        np.testing.assert_allclose(f.cover, c.cover, rtol=1e-9)
    assert sum(t.n_nodes for t in federated.trees) > 4 * settings.trees  # real trees


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
            grid,
            list(institutions.nodes),
            settings,
            bins,
            tree_params(settings, fed.schema, bins.names),
            0.0,
            lambda t, tree: {},
        )


class _NodeError(Exception):
    pass


class _ErrorsAsReplies(AnsweringGrid):
    """A node's exception comes back as an error reply, as Flower delivers it."""

    def send_and_receive(self, messages: object, *, timeout: float | None = None) -> list[Message]:
        from flwr.app import Error
        from grid_helpers import reply_from_node

        out = []
        for m in messages:  # type: ignore[attr-defined]
            try:
                out.append(reply_from_node(m, self.answer(m)))
            except _NodeError as exc:
                reply = reply_from_node(m, RecordDict())
                out.append(Message(Error(code=0, reason=str(exc)), reply_to=m))
                out[-1].metadata.__dict__["_src_node_id"] = reply.metadata.src_node_id
        return out


def test_a_tree_artifact_scores_raw_rows_without_training_code(tmp_path: Path) -> None:
    fed = _federation("sba", 3)
    settings = RunSettings.from_run_config({"model": "gbdt", "trees": 4, "max-depth": 3})
    bins = _bins(fed, 16)
    pooled, test = fed.pooled_train(), fed.pooled_test()
    ensemble = train(
        bins.codes(pooled.x), pooled.y, bins.layout(), tree_params(settings, fed.schema, bins.names)
    )
    spec = _spec(fed)
    out = tmp_path / "model"
    trust = create_key_set(tmp_path / "keys", fed.ids, federation="test")
    save_artifact(
        out,
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
    ens = train(codes, pooled.y, bins.layout(), TreeParams(n_trees=5, max_depth=3))
    x = ens.shap_inputs(codes[:300])
    assert np.isnan(x).any()  # missing codes reach TreeSHAP as missing values
    explainer = shap.TreeExplainer(ens.shap_model())
    values = explainer.shap_values(x)
    assert values.shape == (300, len(bins.features))
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


def test_interim_bins_code_every_raw_value() -> None:
    import pandas as pd

    from jointcredit.models.trees.interim_bins import FeatureBins

    bins = TreeBins(
        features=[
            FeatureBins(name="amount", kind="numeric", edges=[10.0, 20.0]),
            FeatureBins(name="sector", kind="categorical", levels=["retail", "farm"]),
        ]
    )
    x = pd.DataFrame(
        {
            "amount": [5.0, 10.0, 15.0, 20.0, 99.0, np.nan],
            "sector": ["retail", "farm", "mining", None, "retail", "farm"],
        }
    )
    codes = bins.codes(x)
    assert codes[:, 0].tolist() == [0, 0, 1, 1, 2, 3]  # edges[i-1] < v <= edges[i]; 3 missing
    assert codes[:, 1].tolist() == [0, 1, 2, 3, 0, 1]  # 2: any other value; 3: missing
    layout = bins.layout()
    assert layout.n_bins == (4, 4) and layout.missing == (3, 3)
    assert TreeBins.model_validate_json(bins.to_json()).digest() == bins.digest()


def test_baselines_for_trees_xgboost_pooled_and_each_institution_alone() -> None:
    from jointcredit.simulations import tree_baselines

    fed = _federation("sba", 3)
    settings = RunSettings.from_run_config(
        {"model": "gbdt", "trees": 10, "max-depth": 3, "max-bins": 16}
    )
    bins = _bins(fed, settings.max_bins)
    train_x, test_x = tree_baselines.xgboost_frames(
        fed.schema, fed.pooled_train().x, fed.pooled_test().x
    )
    for name, spec in fed.schema.features.items():
        if spec.type == "categorical":  # one vocabulary: the same code means the same value
            assert list(train_x[name].cat.categories) == list(test_x[name].cat.categories)
    central, local = tree_baselines.both(fed, bins, settings)
    assert central.auc is not None and central.auc > 0.65
    assert central.same_bins_auc is not None and central.same_bins_auc > 0.65
    assert set(local.per_institution) == set(fed.ids)
    assert local.mean_own_auc is not None and local.mean_own_auc > 0.55


def test_membership_audit_of_a_tree_ensemble() -> None:
    from jointcredit.simulations.audit import membership_audit

    fed = _federation("sba", 3)
    settings = RunSettings.from_run_config({"model": "gbdt", "trees": 5, "max-depth": 3})
    bins = _bins(fed, 16)
    pooled = fed.pooled_train()
    params = tree_params(settings, fed.schema, bins.names)
    ensemble = train(bins.codes(pooled.x), pooled.y, bins.layout(), params)
    spec = _spec(fed)
    audit = membership_audit(fed, spec, TreeModule(ensemble), settings, references=2, bins=bins)
    assert audit.mia_auc is not None and 0.4 < audit.mia_auc < 0.7
