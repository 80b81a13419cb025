"""The eligibility service on a signed binned scorecard (SBA lenders): it starts, scores one
applicant and a batch alike, at the points table's score, and its model reasons are the
features whose attributes lost the most points against their best attribute."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.models.artifact import ScoringModel, load_artifact, save_artifact, state_to_numpy
from jointcredit.models.binning import Classing, bin_codes, binning_from_rows
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.preprocessing import CategoricalFeature, agree, summarize
from jointcredit.models.scorecard import woe_preprocessing
from jointcredit.service.decide import Decider
from jointcredit.service.loader import check_model, probes
from jointcredit.service.policy import DEFAULT_POLICY, Policy
from jointcredit.trust import keys, store
from jointcredit.trust.keyset import create_key_set


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ScoringModel:
    root = tmp_path_factory.mktemp("scorecard-service")
    fed = load_federation(DataConfig(dataset="sba", institutions=4))
    summaries = [
        summarize(d.train.x, d.train.y, fed.schema, max_categories=64, min_count=5)
        for d in fed.institutions.values()
    ]
    agreed = agree(summaries, fed.schema, max_categories=64, min_count=5)
    vocabularies = {
        f.name: f.categories for f in agreed.features if isinstance(f, CategoricalFeature)
    }
    parts = [(d.train.x, d.train.y) for d in fed.institutions.values()]
    table = binning_from_rows(parts, fed.schema, vocabularies, Classing())
    spec = woe_preprocessing(table)
    pooled = fed.pooled_train()
    fit = LogisticRegression(C=1e4, max_iter=1000).fit(spec.transform(pooled.x), pooled.y)
    arch = architecture("scorecard", spec.n_outputs)
    net = build_model(arch, seed=0)
    with torch.no_grad():
        net.linear.weight.copy_(torch.tensor(fit.coef_, dtype=torch.float32))  # type: ignore[union-attr]
        net.linear.bias.copy_(torch.tensor(fit.intercept_, dtype=torch.float32))  # type: ignore[union-attr]
    trust = create_key_set(root / "keys", fed.ids, federation=f"svc-{root.name}")
    store.save_store(root / "trust.json", trust)
    save_artifact(
        root / "model", state=state_to_numpy(net), spec=spec, architecture=arch,
        stage="final",
        schema=fed.schema, institutions=fed.ids, training={}, metrics={},
        created_at="2026-12-06T00:00:00+00:00", trust=trust, provenance={"round": 1},
        signer=keys.load_private_key(root / "keys" / "coordinator.key"), binning=table,
    )  # fmt: skip
    return load_artifact(root / "model", store.load_store(root / "trust.json"))


def _loans(n: int) -> list[dict[str, Any]]:
    x = load_federation(DataConfig(dataset="sba")).pooled_test().x.head(n)
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in x.to_dict(orient="records")
    ]


def test_the_service_scores_a_scorecard_at_its_points(model: ScoringModel) -> None:
    check_model(model)
    assert len(probes(model.spec, model.card.data_schema.features)) > len(model.spec.features)
    policy = Policy.model_validate(tomllib.loads(Path(DEFAULT_POLICY).read_text()))
    decider = Decider(model, policy)
    loans = _loans(200)
    batch = decider.decide(loans, [{}] * len(loans), [None] * len(loans))
    for k in (0, 17, 99):
        one = decider.decide_one(loans[k], {}, None)
        assert one.score == [batch.score[k]] and one.decision == [batch.decision[k]]
        assert one.reasons(0) == batch.reasons(k)
    assert model.binning is not None and model.card.scorecard is not None
    codes = bin_codes({f: [a[f] for a in loans] for f in decider.features}, model.binning.bins)
    points = model.card.scorecard
    assert batch.score == points.score(codes, decider.features).tolist()
    # Reasons: points lost against each feature's best attribute, the largest first.
    contrib = np.asarray(batch.contributions)
    assert (contrib >= 0).all()
    lookup = points.lookup(decider.features)
    factor = points.scale.pdo / math.log(2)
    explained = 0
    for k in range(len(loans)):
        lost = [
            max(p for p, n in zip(table, f.rows, strict=True) if n > 0) - table[codes[k, j]]
            for j, (table, f) in enumerate(zip(lookup, model.spec.features, strict=True))
        ]
        assert contrib[k] * factor == pytest.approx(lost, abs=4e-3)  # rounded to 1e-4 for display
        model_reasons = [
            batch.reason_table[i]["feature"]
            for i in batch.reason_ids[k]
            if batch.reason_table[i]["kind"] == "model"
        ]
        if model_reasons:
            explained += 1
            assert model_reasons[0] == decider.features[int(np.argmax(lost))]
    assert explained > len(loans) / 2
