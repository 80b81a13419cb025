"""Stability monitoring (docs/GOVERNANCE.md, "Stability monitoring"): PSI and CSI against a
hand computation; through the HTTP API, stable while the service serves applicants drawn from
the training distribution and "act" once they shift, with one log line per crossing."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from service_helpers import signed_artifact

from jointcredit.data.catalog import DataConfig, load_federation
from jointcredit.models.binning import BinningSpec, CategoricalBins, NumericBins
from jointcredit.models.reference import (
    EPSILON,
    Reference,
    band,
    count_rows,
    score_bands,
    stability_index,
)
from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service
from jointcredit.service.window import WindowStore, window_url

WINDOW = 1500  # state has ~50 levels: sampling alone gives a CSI near (levels - 1) / WINDOW


def test_psi_matches_a_hand_computation() -> None:
    # shares 0.5/0.3/0.2 -> 0.3/0.3/0.4:
    # (0.3-0.5) ln(0.3/0.5) + 0 + (0.4-0.2) ln(0.4/0.2) = 0.102165 + 0.138629
    assert stability_index([50, 30, 20], [30, 30, 40]) == pytest.approx(0.240795, abs=1e-6)
    assert stability_index([5, 3, 2], [50, 30, 20]) == pytest.approx(0.0, abs=1e-12)
    # An empty bin counts as EPSILON of its side: (0.5-1) ln(0.5/1) + (0.5-1e-4) ln(0.5/1e-4)
    hand = -0.5 * math.log(0.5) + (0.5 - EPSILON) * math.log(0.5 / EPSILON)
    assert stability_index([100, 0], [50, 50]) == pytest.approx(hand, rel=1e-9)
    assert math.isnan(stability_index([1, 2], [0, 0]))  # no applicants yet
    with pytest.raises(ValueError, match="bins"):
        stability_index([1, 2], [1, 2, 3])


def test_bands_and_score_bands() -> None:
    assert [band(v) for v in (0.0, 0.0999, 0.1, 0.25, 0.2501, float("nan"))] == [
        "stable", "stable", "watch", "watch", "act", "stable",
    ]  # fmt: skip
    # [350, 450) is band 0, [450, 500) band 1, ..., [850, 950] band 9
    assert score_bands(np.array([350, 449, 450, 499, 500, 849, 850, 950])).tolist() == [
        0, 0, 1, 1, 2, 8, 9, 9,
    ]  # fmt: skip


def test_reference_counts_and_refuses_inconsistent_counts() -> None:
    bins = BinningSpec(
        features=[
            NumericBins(name="age", edges=[30.0, 50.0], special=[-1.0]),
            CategoricalBins(name="kind", groups=[["a"], ["b"], ["__other__"]]),
        ]
    )
    x = pd.DataFrame({"age": [20.0, 30.0, 60.0, -1.0, np.nan], "kind": ["a", "b", "z", None, "a"]})
    counts = count_rows(np.array([400, 460, 900, 700, 700]), x, bins)
    ref = Reference.from_vector(counts, bins, ["bank-a"])
    assert ref.score_counts == [1, 1, 0, 0, 0, 0, 2, 0, 0, 1]
    assert ref.feature_counts == {"age": [1, 1, 1, 1, 1], "kind": [2, 1, 1, 1]}
    assert ref.rows == 5 and Reference.model_validate_json(ref.to_bytes()) == ref
    broken = ref.model_dump()
    broken["feature_counts"]["kind"] = [2, 1, 1, 0]
    with pytest.raises(ValueError, match="sum 5"):
        Reference.model_validate(broken)


def test_the_window_sits_beside_a_sqlite_log_and_inside_another_database() -> None:
    assert window_url("sqlite:////srv/audit.sqlite") == "sqlite:////srv/audit.sqlite-monitoring"
    assert window_url("postgresql://db/audit") == "postgresql://db/audit"
    # The URL's options stay options, not a part of the file's name.
    assert (
        window_url("sqlite:////srv/a.db?timeout=30") == "sqlite:////srv/a.db-monitoring?timeout=30"
    )


def test_the_window_keeps_the_last_applicants_and_each_crossing_is_reported_once() -> None:
    store = WindowStore("sqlite://", size=3, n_features=2)  # in memory, seen by every thread
    store.add([400, 500], np.array([[0, 1], [1, 1]]))
    store.add([600, 700, 800], np.array([[2, 0], [3, 0], [4, 1]]))
    scores, codes = store.window()
    assert scores.tolist() == [800, 700, 600] and codes.tolist() == [[4, 1], [3, 0], [2, 0]]
    # The first record of a band: a crossing only out of "stable".
    assert [store.cross("score", b) for b in ("stable", "act", "act", "watch", "watch")] == [
        None, "stable", None, "act", None,
    ]  # fmt: skip
    assert store.cross("feature x", "watch") == "stable"


def test_no_band_is_judged_over_fewer_applicants_than_the_minimum(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One applicant's PSI is huge by sampling alone: no crossing is logged before the window
    holds MIN_APPLICANTS; the same shift over enough applicants is logged once."""
    from jointcredit.service.metrics import Metrics
    from jointcredit.service.monitoring import MIN_APPLICANTS, Monitor

    caplog.set_level(logging.WARNING, logger="jointcredit.service.monitoring")
    bins = BinningSpec(features=[NumericBins(name="age", edges=[30.0, 50.0], special=[])])
    rng = np.random.default_rng(0)
    scores = rng.integers(350, 951, 2000)
    ref = Reference.from_vector(
        count_rows(
            scores,
            pd.DataFrame({"age": rng.uniform(18, 80, 2000)}),
            bins,
        ),
        bins,
        ["a"],
    )
    monitor = Monitor(ref, "sqlite://", Metrics(), size=1000, interval=3600)
    try:
        monitor.add_one(900, {"age": 40.0})
        assert monitor.flush()["score"]["band"] == "act"  # the index itself, for whoever asks
        assert not _crossings(caplog, "PSI")
        n = MIN_APPLICANTS - 1
        monitor.add([900] * n, {"age": [40.0] * n})  # everyone in the top band: a real shift
        monitor.flush()
        assert len(_crossings(caplog, "PSI")) == 1
    finally:
        monitor.close()


# -- through the HTTP API


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("monitoring")
    model_dir = signed_artifact(root, reference=True)
    key = new_key(root / "keys.json", "bank-a")
    service = load_service(
        model_dir, root / "trust.json", api_keys=root / "keys.json",
        db_url=f"sqlite:///{root / 'audit.sqlite'}", monitoring_window=WINDOW,
    )  # fmt: skip
    with TestClient(create_app(service)) as client:
        yield {"client": client, "headers": {"Authorization": f"Bearer {key}"}, "root": root}


def _applicants(x: pd.DataFrame) -> list[dict[str, Any]]:
    rows = x.astype(object).where(x.notna(), None).to_dict(orient="records")
    return [{k: (int(v) if isinstance(v, np.integer) else v) for k, v in r.items()} for r in rows]


def _serve(api: dict[str, Any], x: pd.DataFrame) -> None:
    """Decide `x`: its first applicant alone, half the rest as a batch of rows, the other half
    as columns (each applicant joins the window once, whatever the route)."""
    client, headers = api["client"], api["headers"]
    apps = _applicants(x)
    one = client.post("/v1/decisions", json={"applicant": apps[0]}, headers=headers)
    assert one.status_code == 200, one.text[:500]
    half = 1 + (len(apps) - 1) // 2
    rows = client.post(
        "/v1/decisions:batch",
        json={"applications": [{"applicant": a} for a in apps[1:half]]},
        headers=headers,
    )
    assert rows.status_code == 200, rows.text[:500]
    columns = {f: [a[f] for a in apps[half:]] for f in apps[0]}
    cols = client.post("/v1/decisions:columnar", json={"columns": columns}, headers=headers)
    assert cols.status_code == 200, cols.text[:500]


def _monitoring(api: dict[str, Any]) -> dict[str, Any]:
    r = api["client"].get("/v1/monitoring", headers=api["headers"])
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _crossings(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    return [m for m in caplog.messages if m.startswith(f"stability: {what}")]


@pytest.mark.integration
def test_monitoring_is_stable_on_the_training_distribution_and_acts_on_a_shift(
    api: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jointcredit.service.monitoring")
    assert api["client"].get("/v1/monitoring").status_code == 401
    empty = _monitoring(api)
    assert empty["available"] and empty["window"] == {"size": WINDOW, "applicants": 0}
    assert empty["score"] == {"value": None, "band": "stable"}

    fed = load_federation(DataConfig(dataset="sba", institutions=4, synthetic_rows=800))
    test = fed.pooled_test().x
    _serve(api, test.sample(WINDOW, random_state=0))  # held out, same distribution
    stable = _monitoring(api)
    assert stable["window"]["applicants"] == WINDOW
    assert stable["reference"]["rows"] == len(fed.pooled_train().x)
    assert stable["score"]["value"] < 0.1 and stable["score"]["band"] == "stable"
    assert {f: v["band"] for f, v in stable["features"].items()} == dict.fromkeys(
        test.columns, "stable"
    )
    assert not _crossings(caplog, "PSI")
    metrics = api["client"].get("/metrics").text
    assert f"jointcredit_monitoring_window {float(WINDOW)}" in metrics
    assert 'jointcredit_feature_csi{feature="state"}' in metrics

    # Adverse selection: the window fills with the riskiest third of the same applicants.
    model = api["client"].app.state.service.decider.model  # type: ignore[attr-defined]
    risky = test[model.score(test) < np.quantile(model.score(test), 1 / 3)]
    _serve(api, risky.sample(WINDOW, replace=True, random_state=1))
    shifted = _monitoring(api)
    assert shifted["window"]["applicants"] == WINDOW  # the oldest left the window
    assert shifted["score"]["value"] > 0.25 and shifted["score"]["band"] == "act"
    assert _crossings(caplog, "PSI") == [
        f"stability: PSI of score {shifted['score']['value']:.4f} moved from stable to act "
        f"(window of {WINDOW} applicants)"
    ]
    _monitoring(api)  # the band is unchanged: no second line
    assert len(_crossings(caplog, "PSI")) == 1
    metrics = api["client"].get("/metrics").text
    psi = next(line for line in metrics.splitlines() if line.startswith("jointcredit_score_psi "))
    assert float(psi.split()[1]) == pytest.approx(shifted["score"]["value"], abs=1e-6)
    # Each read writes and reads the window: an expensive read, limited per API key.
    codes = [
        api["client"].get("/v1/monitoring", headers=api["headers"]).status_code for _ in range(10)
    ]
    assert 429 in codes


@pytest.mark.integration
def test_a_model_without_a_reference_reports_monitoring_unavailable(tmp_path: Path) -> None:
    model_dir = signed_artifact(tmp_path)
    key = new_key(tmp_path / "keys.json", "bank-a")
    service = load_service(model_dir, tmp_path / "trust.json", api_keys=tmp_path / "keys.json",
                           db_url=f"sqlite:///{tmp_path / 'audit.sqlite'}")  # fmt: skip
    with TestClient(create_app(service)) as client:
        r = client.get("/v1/monitoring", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json()["available"] is False
