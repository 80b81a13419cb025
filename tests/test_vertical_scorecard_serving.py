"""Serving a vertical scorecard, in process: the platform's endpoint answers an applicant's
coarse code (the scorecard's attribute) per its feature, through the merge maps its signed
part holds (no sides, no raw value, no edge, no fine bin), signed; the bank's service
turns them with its own features into the points table's PD and score, with the platform as
one reason group, and refers naming the platform when it is slow or does not know the
applicant."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from vertical_helpers import CREATED, Federation

from jointcredit.data.synthetic_vertical import ID_COLUMN
from jointcredit.data.vertical_datasets import vertical_frames
from jointcredit.data.vertical_schema import load_vertical_schema
from jointcredit.deploy import kits
from jointcredit.models.artifact import ArtifactError
from jointcredit.models.binning.table import Classing
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.vertical.artifact import (
    FeaturePart,
    PartyEntry,
    part_directory,
    write_feature_part,
)
from jointcredit.models.vertical.feature_party import SplitTable
from jointcredit.models.vertical.merge_maps import coarse_codes
from jointcredit.models.vertical.party_bins import party_bins, party_schema
from jointcredit.models.vertical.scorecard import artifact
from jointcredit.models.vertical.scorecard.feature_party import ScorecardFeatureParty
from jointcredit.models.vertical.scorecard.fit import VerticalScorecard
from jointcredit.models.vertical.scorecard.label_party import train
from jointcredit.privacy.paillier import HeuSecretKey, public_key
from jointcredit.service.audit import AuditLog
from jointcredit.service.auth import new_key
from jointcredit.service.schemas import DecisionOut
from jointcredit.service.vertical_kit import load_kit
from jointcredit.service.vertical_party import (
    Applicants,
    FeaturePartyEndpoint,
    ServedPart,
    SidesRequest,
)
from jointcredit.service.vertical_party_app import party_app
from jointcredit.service.vertical_service import create_vertical_app, load_vertical_service
from jointcredit.trust import keys
from jointcredit.trust.canonical import canonical_json
from jointcredit.trust.manifest import sign_directory
from jointcredit.trust.store import load_store

pytestmark = pytest.mark.integration


def scorecard_federation(
    root: Path, rows: int = 1500, seed: int = 5, trained_for: str = "bank"
) -> Federation:
    """Kits of a bank and a platform, and a vertical scorecard fitted on the rows both hold
    (the in-process exchange), each party's part signed by its own key; the platform's part
    names `trained_for` as its label party."""
    out = root / "kits"
    kits.provision("vertical-scorecard-test", ["bank", "platform"], "127.0.0.1:9092", out)
    for party in ("bank", "platform"):
        kits.issue_endpoint_certificate(out, party, ["127.0.0.1", "localhost"])
    trust = load_store(out / "coordinator" / "trust.json")
    signer = {p: keys.load_private_key(out / p / "signing.key") for p in ("bank", "platform")}
    vschema, frames = vertical_frames("synthetic-vertical", seed=seed, rows=rows)
    bank, platform = frames["bank"], frames["platform"]
    joined = bank.merge(platform, on=ID_COLUMN)
    aligned = {"bank": joined[list(bank.columns)], "platform": joined[list(platform.columns)]}
    bins = {
        p: party_bins(aligned[p], party_schema(vschema, p), max_bins=16, max_categories=20,
                      min_count=5)
        for p in aligned
    }  # fmt: skip
    secret = HeuSecretKey()
    fp = ScorecardFeatureParty(
        aligned["platform"], bins["platform"], public_key(secret.public.to_bytes())
    )
    y = aligned["bank"][vschema.base.label].to_numpy()
    fitted = train(aligned["bank"], y, bins["bank"], vschema.base, [fp], secret,
                   classing=Classing(fine_bins=16))  # fmt: skip
    model = root / "run" / "model"
    empty = SplitTable(bin_layout(bins["platform"]).missing)
    maps = tuple(p.merge for p in fitted.platform)
    part = FeaturePart("platform", 1, empty, bins["platform"], "scorecard", maps, trained_for)
    digest = write_feature_part(model, part, created_at=CREATED, signer=signer["platform"],
                                trust=trust)  # fmt: skip
    artifact.write_label_part(
        model, model=artifact.ScorecardModel.of(fitted, "lda"),
        schema=party_schema(vschema, "bank"), label_party="bank",
        parties={"platform": PartyEntry(index=1, splits=0, part_sha256=digest)},
        holders={"platform": bins["platform"].names}, training={}, metrics={},
        created_at=CREATED, signer=signer["bank"], trust=trust,
    )  # fmt: skip
    schema = root / "schema.toml"
    schema.write_text(vschema.to_toml(), encoding="utf-8")
    data = root / "platform.csv"
    platform.to_csv(data, index=False)
    applicants = bank.drop(columns=[vschema.base.label, *vschema.base.protected])
    return Federation(
        root, out, model, schema, data, applicants, frozenset(platform[ID_COLUMN].astype(str))
    )


@dataclass
class Platform:
    fed: Federation
    endpoint: FeaturePartyEndpoint
    client: TestClient


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    fed = scorecard_federation(tmp_path_factory.mktemp("vsc-serve"))
    kit = load_kit(fed.kit("platform"))
    served = ServedPart.load(fed.model, "platform", kit.trust)
    applicants = Applicants.load(fed.platform_data, served, load_vertical_schema(fed.schema))
    audit = AuditLog(f"sqlite:///{fed.root / 'platform.sqlite'}")
    endpoint = FeaturePartyEndpoint(served, applicants, audit)
    for k in [*fed.known(3), *fed.unknown(1)]:
        endpoint.consents.add("bank", f"consent-{k}", fed.applicant(k)[0], "vertical")
    with TestClient(party_app(endpoint, kit)) as client:
        yield Platform(fed, endpoint, client)


class _Slow(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(2)
        return await self.inner.handle_async_request(request)


def _service(fed: Federation, transport: httpx.AsyncBaseTransport, name: str) -> tuple[
    TestClient, str
]:  # fmt: skip
    keys_file = fed.root / f"{name}.keys.json"
    token = new_key(keys_file, "bank")
    service = load_vertical_service(
        fed.model, fed.trust, fed.kit("bank"), {"platform": "https://platform.test"},
        api_keys=keys_file, db_url=f"sqlite:///{fed.root / f'{name}.sqlite'}",
        anchor_key=fed.root / f"{name}.anchor.key",
        anchors_file=fed.root / f"{name}.anchors.jsonl", transport=transport, timeout=0.3,
    )  # fmt: skip
    return TestClient(create_vertical_app(service)), token


def _decide(client: TestClient, token: str, fed: Federation, k: int,
            language: str = "en") -> dict[str, object]:  # fmt: skip
    applicant_id, features = fed.applicant(k)
    body = {
        "applicant": features,
        "vertical": {"applicant_id": applicant_id, "consent_id": f"consent-{k}"},
        "language": language,
    }
    r = client.post("/v1/decisions", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    out: dict[str, object] = r.json()
    return out


def test_the_platform_answers_coarse_codes_only(platform: Platform) -> None:
    fed = platform.fed
    applicant = fed.applicant(fed.known(1)[0])[0]
    request = SidesRequest(applicant_id=applicant, consent_id=f"consent-{fed.known(1)[0]}",
                           model=platform.endpoint.served.model_id)  # fmt: skip
    status, answer = platform.endpoint.answer("bank", request)
    applicants, part = platform.endpoint.applicants, platform.endpoint.served.part
    row = applicants.rows[applicant]
    assert status == 200 and answer.sides is None
    assert answer.codes == applicants.codes[row].tolist()
    assert set(json.loads(answer.model_dump_json())) >= {"codes"}
    # Every applicant's answer: its fine bins through the maps, within each feature's k_j.
    data = pd.read_csv(fed.platform_data)
    fine = part.bins.codes(data[part.bins.names]).astype(np.int64)
    k = np.array([int(m.max()) + 1 for m in part.merge])
    np.testing.assert_array_equal(applicants.codes, coarse_codes(fine, part.merge))
    assert (applicants.codes >= 0).all() and (applicants.codes < k).all()
    model = load_vertical_score(fed)
    assert k.tolist() == [p.woe.bins.n_bins for p in model.platform]
    merged = [j for j, m in enumerate(part.merge) if len(m) > k[j]]
    assert merged  # some fine bins pooled: there the answer is not the fine code
    for j in merged:
        assert np.any(applicants.codes[:, j] != fine[:, j])


def test_a_tampered_or_malformed_merge_map_is_refused(platform: Platform, tmp_path: Path) -> None:
    """The maps are in the platform's signed part: changed, it fails verification; signed
    malformed (by the platform's own key), it fails loading naming the maps."""
    fed = platform.fed
    trust = load_store(fed.trust)
    signer = keys.load_private_key(fed.kit("platform") / "signing.key")
    for name, resign in (("tampered", False), ("malformed", True), ("empty", True)):
        model = tmp_path / name
        shutil.copytree(fed.model, model)
        directory = part_directory(model, "platform")
        card = json.loads((directory / "part.json").read_text())
        if name == "empty":
            card["merge"] = []  # no map at all: refused as one missing, not loaded without
        else:
            card["merge"][0] = [0] * len(card["merge"][0][:-1]) + [2]  # coarse code 1 unused
        (directory / "part.json").write_bytes(canonical_json(card))
        if resign:
            sign_directory(directory, ["part.json", "splits.npz", "bins.json"],
                           {"kind": "jointcredit-vertical-part", "party": "platform",
                            "created_at": CREATED}, signer, trust,
                           institution="platform")  # fmt: skip
        match = (
            "invalid merge maps" + (".*not all used" if name == "malformed" else "")
            if resign
            else "SHA-256|digest|signature"
        )
        with pytest.raises(ArtifactError, match=match):
            ServedPart.load(model, "platform", trust)


def test_the_decision_is_the_points_tables(platform: Platform) -> None:
    fed = platform.fed
    client, token = _service(fed, httpx.ASGITransport(platform.client.app), "decides")
    model = load_vertical_score(fed)
    part = platform.endpoint.served.part
    with client:
        for k in fed.known(3):
            got = _decide(client, token, fed, k)
            applicant_id, features = fed.applicant(k)
            own = model.own_codes(_frame(features))
            row = platform.endpoint.applicants.rows[applicant_id]
            fine = part.bins.codes(_platform_row(fed, applicant_id)).astype(np.int64)
            coarse = coarse_codes(fine, [p.merge for p in model.platform])  # the bank's maps
            assert coarse.tolist()[0] == platform.endpoint.applicants.codes[row].tolist()
            pd_ = float(1 / (1 + np.exp(-model.logit(own, coarse)[0])))
            assert got["probability_of_default"] == pytest.approx(pd_, abs=1e-6)  # as answered
            assert got["score"] == int(model.points.scale.score(pd_))
            assert got["decision"] in ("approve", "decline", "refer")
            DecisionOut.model_validate(got, strict=True)
            for r in got["reasons"]:  # type: ignore[attr-defined]
                assert r["kind"] != "model" or r["feature"] in [*features, "party:platform"]
    decider = client.app.state.service.decider  # type: ignore[attr-defined]
    assert decider.columns[-1] == "party:platform"
    assert client.app.state.service.model_info.kind == "vertical-scorecard"  # type: ignore[attr-defined]
    # Contributions: each attribute's log-odds over its feature's best, the platform's summed.
    k = fed.known(1)[0]
    applicant_id, features = fed.applicant(k)
    codes = platform.endpoint.applicants.codes[platform.endpoint.applicants.rows[applicant_id]]
    pd_, contrib = decider.scored(features, {"platform": codes})
    n_own = len(model.own)
    assert contrib.shape == (1, n_own + 1) and (contrib >= 0).all()
    best = sum(min(model.weights[a] * f.values) for a, f in enumerate(model.own))
    best += sum(min(model.weights[n_own + j] * p.woe.values) for j, p in enumerate(model.platform))
    logit = model.intercept + best + contrib.sum()
    assert pd_[0] == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-12)


def test_a_slow_platform_or_an_unknown_applicant_refers_naming_the_platform(
    platform: Platform,
) -> None:
    fed = platform.fed
    client, token = _service(fed, _Slow(httpx.ASGITransport(platform.client.app)), "slow")
    with client:
        for language, word in (("en", "platform's information could not be obtained"),
                               ("zh", "未能获取platform的信息")):  # fmt: skip
            got = _decide(client, token, fed, fed.known(1)[0], language=language)
            assert got["decision"] == "refer" and got["score"] is None
            first = got["reasons"][0]  # type: ignore[index]
            assert first["code"] == "VERTICAL_PARTY_UNAVAILABLE" and word in first["text"]
            assert first["feature"] == "party:platform"
    client, token = _service(fed, httpx.ASGITransport(platform.client.app), "unknown")
    with client:
        got = _decide(client, token, fed, fed.unknown(1)[0])
    assert got["decision"] == "refer" and got["probability_of_default"] is None
    assert got["reasons"][0]["code"] == "VERTICAL_PARTY_NO_DATA"  # type: ignore[index]


def load_vertical_score(fed: Federation) -> VerticalScorecard:
    return artifact.load_label_part(fed.model, load_store(fed.trust)).model


def _frame(features: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame([{k: (np.nan if v is None else v) for k, v in features.items()}])


def _platform_row(fed: Federation, applicant_id: str) -> pd.DataFrame:
    data = pd.read_csv(fed.platform_data)
    return data[data[ID_COLUMN].astype(str) == applicant_id]


class _Tampered(httpx.AsyncBaseTransport):
    """The platform's signed answer with one code changed in flight."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        r = await self.inner.handle_async_request(request)
        answer = json.loads(await r.aread())
        answer["codes"][0] = 1 - min(answer["codes"][0], 1)
        body = json.dumps(answer).encode()
        return httpx.Response(r.status_code, headers=dict(r.headers), content=body)


def test_a_changed_or_impossible_code_is_not_scored(platform: Platform) -> None:
    from jointcredit.service.vertical_client import _codes

    fed = platform.fed
    client, token = _service(fed, _Tampered(httpx.ASGITransport(platform.client.app)), "moved")
    with client:
        got = _decide(client, token, fed, fed.known(1)[0])
    assert got["decision"] == "refer" and got["score"] is None
    first = got["reasons"][0]  # type: ignore[index]
    assert first["code"] == "VERTICAL_PARTY_UNAVAILABLE" and "answer refused" in first["text"]
    assert _codes([0, 3], (4, 3)) == ("unavailable", "a code outside its feature's bins")
    # past int64 (the answer's JSON allows it): refused, not an OverflowError
    assert _codes([10**23, 0], (4, 3)) == ("unavailable", "a code outside its feature's bins")
    assert _codes([0], (4, 3)) == ("unavailable", "1 codes for 2 features")
    assert _codes(None, (4,)) == ("unavailable", "0 codes for 1 features")
    assert _codes([3, 2], (4, 3)).tolist() == [3, 2]  # type: ignore[union-attr]


def test_a_scorecard_whose_platform_part_names_another_label_party_is_refused(
    tmp_path: Path,
) -> None:
    """The bank's signed label part records the platform's real part, but that part was
    trained for another label party (its own signature says so): the model does not load."""
    fed = scorecard_federation(tmp_path, rows=600, trained_for="lender")
    trust = load_store(fed.kit("bank") / "trust.json")
    with pytest.raises(ArtifactError, match="trained for label party 'lender', not 'bank'"):
        artifact.load_vertical_scorecard(fed.model, trust)
