"""Special codes over HTTP: a numeric feature's special values (the synthetic bureau set's
`delinquencies_24m`, `special = [96, 98]` beside `min = 0`, `max = 95`) are accepted although
they lie outside the range, scored the way each model family was trained to read them (the
training path's own preprocessing, bins or points), and never referred as outside the training
data; every other value outside the range is still a 422 naming the field and the codes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from service_helpers import Api, signed_artifact

from jointcredit.models.artifact import ScoringModel
from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service

pytestmark = pytest.mark.integration

FEATURE = "delinquencies_24m"
CODES = (96, 98)


class Served(Api):
    @property
    def model(self) -> ScoringModel:
        return self.service.decider.model

    def applicant(self, value: float) -> dict[str, Any]:
        return {**self.example["applicant"], FEATURE: value}

    def decide(self, value: float) -> Any:
        return self.post("/v1/decisions", {**self.example, "applicant": self.applicant(value)})

    def trained_pd(self, value: float) -> float:
        """The probability of default the training path gives (a DataFrame through the
        artifact's own preprocessing or bins)."""
        frame = pd.DataFrame([self.applicant(value)])[[f.name for f in self.model.spec.features]]
        return float(self.model.predict_pd(frame)[0])


@pytest.fixture(scope="module", params=["logreg", "mlp", "scorecard", "gbdt"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    kind = request.param
    root = tmp_path_factory.mktemp(f"special-{kind}")
    signed_artifact(root, dataset="synthetic", kind=kind)
    token = new_key(root / "keys.json", "bank-a")
    service = load_service(
        root / "model", root / "trust.json", api_keys=root / "keys.json",
        db_url=f"sqlite:///{root / 'audit.sqlite'}",
    )  # fmt: skip
    assert service.decider.model.card.data_schema.features[FEATURE].special == (96.0, 98.0)
    with TestClient(create_app(service)) as client:
        yield Served(client, token, service)


def test_special_codes_are_accepted_and_scored_as_trained(served: Served) -> None:
    for code in CODES:
        r = served.decide(code)
        assert r.status_code == 200, r.json()
        d = r.json()
        assert d["out_of_range"] == {} and d["unseen_values"] == {}, d
        assert "OUTSIDE_TRAINING_DATA" not in {x["code"] for x in d["reasons"]}
        assert d["probability_of_default"] == pytest.approx(served.trained_pd(code), abs=2e-6)


def test_other_values_outside_the_range_are_refused_naming_the_codes(served: Served) -> None:
    for value in (97, 95.5, -1, 1e6):
        r = served.decide(value)
        assert r.status_code == 422, (value, r.json())
        (problem,) = r.json()["detail"]
        assert problem["field"] == f"applicant.{FEATURE}"
        assert problem["reason"] == (
            "Input should be between 0 and 95, or one of the special codes 96, 98"
        )
    assert served.decide(95).status_code == 200 and served.decide(0).status_code == 200


def test_batches_accept_the_codes_alike(served: Served) -> None:
    values = [96, 98, 2]
    columns = {k: [v] * len(values) for k, v in served.example["applicant"].items()}
    columns[FEATURE] = values
    out = served.client.post(
        "/v1/decisions:columnar", json={"columns": columns}, headers=served.headers
    )
    assert out.status_code == 200, out.json()
    singles = [served.decide(v).json() for v in values]
    assert out.json()["decisions"]["score"] == [d["score"] for d in singles]
    assert out.json()["decisions"]["out_of_range"] == [{}, {}, {}]
    columns[FEATURE] = [96, 97, 2]
    bad = served.client.post(
        "/v1/decisions:columnar", json={"columns": columns}, headers=served.headers
    )
    assert bad.status_code == 422
    assert [p["field"] for p in bad.json()["detail"]] == [f"columns.{FEATURE}.1"]


def test_each_family_reads_a_code_as_a_code(served: Served) -> None:
    """Logistic and MLP: the preprocessing sets the feature's column to the mean (0) and the
    code's own indicator; the binned scorecard: the code's own bin; trees (bins owned by the
    tree engine): the serving path equals the training path (above)."""
    model = served.model
    kind = model.card.architecture.kind
    if kind in ("logreg", "mlp"):
        names = model.spec.output_names
        for code in CODES:
            row = dict(zip(names, model.inputs_record(served.applicant(code))[0], strict=True))
            assert row[FEATURE] == 0.0
            on = [n for n in names if n.startswith(f"{FEATURE}__special=")]
            assert on == [f"{FEATURE}__special=96", f"{FEATURE}__special=98"]
            assert [row[n] > 0 for n in on] == [c == code for c in CODES]
        # A code is not read as a magnitude: it scores unlike the largest real count.
        assert served.trained_pd(96) != served.trained_pd(95)
    if kind == "scorecard":
        assert model.binning is not None
        bins = model.binning.bins.feature(FEATURE)
        assert [bins.code(float(c)) for c in CODES] == [bins.regular, bins.regular + 1]
