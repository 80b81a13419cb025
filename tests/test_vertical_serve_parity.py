"""A vertical model's decisions with the horizontal service's joint limit, notices and
batches, in process: the platform's endpoint as tests/test_vertical_scoring.py runs it, the lenders'
exposure endpoints as tests/test_exposure.py runs them. An approve carries the limit the
horizontal rule gives for its PD and policy, less the federation's exposure (a secure sum);
a decision referred for want of the platform's routing gets no limit and nobody is asked about
the applicant's exposure; a decline's notice names the platform's group in English and
Chinese, an unscored referral's names the platform and has no score; a batch decides each
applicant as a single request would, asking the platform once per applicant, a bounded number
at a time, audited as one entry."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi.testclient import TestClient
from vertical_helpers import Federation, vertical_federation

from jointcredit.data.vertical_schema import load_vertical_schema
from jointcredit.service import joint_limits, vertical_decisions, workers
from jointcredit.service.audit import AuditLog
from jointcredit.service.auth import new_key
from jointcredit.service.consent import ConsentRegistry
from jointcredit.service.exposure import Institution, Ledger, pseudonym
from jointcredit.service.exposure_http import ExposureClient, institution_app
from jointcredit.service.joint import JointRequest, joint_limit
from jointcredit.service.loader import StartupError
from jointcredit.service.notice_models import NoticeOut
from jointcredit.service.policy import load_policy
from jointcredit.service.records import derive_views
from jointcredit.service.registry import Registry, RegistryEntry, new_federation_key, public_b64
from jointcredit.service.schemas import DecisionOut
from jointcredit.service.vertical_kit import load_kit
from jointcredit.service.vertical_party import Applicants, FeaturePartyEndpoint, ServedPart
from jointcredit.service.vertical_party_app import party_app
from jointcredit.service.vertical_service import create_vertical_app, load_vertical_service

pytestmark = pytest.mark.integration

INSTITUTIONS = ["bank", "lender-b", "lender-c"]  # the exposure registry (3 at least)
LENDERS = ["bank", "lender-b"]  # those sharing the limit
EXPOSED, FRESH = "TIN-exposed", "TIN-fresh"  # the joint limit's applicant ids
EXPOSURE = {"bank": {EXPOSED: 120_000.0}, "lender-b": {EXPOSED: 30_500.25}, "lender-c": {}}
INCOME, PAYMENTS = 600_000.0, 2_000.0


class Lenders(httpx.AsyncBaseTransport):
    """The lenders' exposure endpoints in process, by host; counts the share requests."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.apps = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}
        self.down: set[str] = set()
        self.asked = 0
        self.delay = 0.0  # seconds each answer takes
        self.now = self.most = 0  # share requests in flight, and the most at once

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked += 1
        if request.url.host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.delay)
            return await self.apps[request.url.host].handle_async_request(request)
        finally:
            self.now -= 1


@dataclass
class Bank:
    fed: Federation
    client: TestClient
    token: str
    other: str  # another lender's API key at the same service
    lenders: Lenders
    platform: FeaturePartyEndpoint
    known: list[int]  # bank applicants the platform holds, each with both consents
    fed_key: bytes
    registry: Registry
    transport: httpx.AsyncBaseTransport  # to the platform's endpoint

    def decide(self, k: int, joint_id: str | None = EXPOSED, **extra: Any) -> dict[str, Any]:
        body = {**self.body(k, joint_id), **extra}
        r = self.client.post("/v1/decisions", json=body, headers=self.auth)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        DecisionOut.model_validate(out, strict=True)
        return out

    def body(self, k: int, joint_id: str | None = EXPOSED) -> dict[str, Any]:
        applicant_id, features = self.fed.applicant(k)
        body: dict[str, Any] = {
            "applicant": features,
            "vertical": {"applicant_id": applicant_id, "consent_id": f"v-{applicant_id}"},
        }
        if joint_id is not None:
            body["joint"] = {
                "applicant_id": joint_id, "annual_income": INCOME,
                "monthly_debt_payments": PAYMENTS, "participating_lenders": LENDERS,
                "consent_id": f"x-{joint_id}",
            }  # fmt: skip
        return body

    def batch(self, bodies: list[dict[str, Any]], **extra: Any) -> httpx.Response:
        payload = {"applications": bodies, **extra}
        return self.client.post("/v1/decisions:batch", json=payload, headers=self.auth)

    def notice(self, decision_id: str, lang: str = "en") -> httpx.Response:
        return self.client.get(f"/v1/decisions/{decision_id}/notice?lang={lang}", headers=self.auth)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return vertical_federation(tmp_path_factory.mktemp("vfed-limits"), trees=6)


def _lenders(fed_key: bytes) -> tuple[Registry, Lenders]:
    keys = {i: X25519PrivateKey.generate() for i in INSTITUTIONS}
    registry = Registry(
        federation="test",
        institutions={i: RegistryEntry(url=f"http://{i}.test", x25519_public=public_b64(
            k.public_key())) for i, k in keys.items()},
    )  # fmt: skip
    apps = {}
    for i in INSTITUTIONS:
        ledger = Ledger({pseudonym(fed_key, a): round(v * 100) for a, v in EXPOSURE[i].items()})
        apps[f"{i}.test"] = institution_app(Institution(i, keys[i], registry, ledger), fed_key)
    return registry, Lenders(apps)


def _service(
    fed: Federation, transport: httpx.AsyncBaseTransport, lenders: Lenders, fed_key: bytes,
    registry: Registry, name: str, joint_ids: tuple[str, ...] = (EXPOSED, FRESH),
) -> tuple[TestClient, str, str]:  # fmt: skip
    """The bank's vertical service (its client, the bank's API key and another lender's),
    joint limits over `lenders`, the applicants' exposure consents registered."""
    keys_file = fed.root / f"{name}.keys.json"
    token, other = new_key(keys_file, "bank"), new_key(keys_file, "lender-b")
    service = load_vertical_service(
        fed.model, fed.trust, fed.kit("bank"), {"platform": "https://platform.test"},
        api_keys=keys_file, db_url=f"sqlite:///{fed.root / f'{name}.sqlite'}",
        anchor_key=fed.root / f"{name}.anchor.key",
        anchors_file=fed.root / f"{name}.anchors.jsonl", transport=transport, timeout=0.5,
    )  # fmt: skip
    service.exposure = ExposureClient(registry, fed_key, transport=lenders)
    consents = ConsentRegistry(service.audit)
    for joint_id in joint_ids:
        consents.add("bank", f"x-{joint_id}", joint_id, "exposure")
    return TestClient(create_vertical_app(service)), token, other


@pytest.fixture(scope="module")
def bank(fed: Federation) -> Iterator[Bank]:
    kit = load_kit(fed.kit("platform"))
    served = ServedPart.load(fed.model, "platform", kit.trust)
    applicants = Applicants.load(fed.platform_data, served, load_vertical_schema(fed.schema))
    endpoint = FeaturePartyEndpoint(
        served, applicants, AuditLog(f"sqlite:///{fed.root / 'platform.sqlite'}")
    )
    known = fed.known(60)
    for k in known:
        applicant_id = fed.applicant(k)[0]
        endpoint.consents.add("bank", f"v-{applicant_id}", applicant_id, "vertical")
    fed_key = bytes.fromhex(new_federation_key())
    registry, lenders = _lenders(fed_key)
    with TestClient(party_app(endpoint, kit)) as platform:
        transport = httpx.ASGITransport(platform.app)
        client, token, other = _service(fed, transport, lenders, fed_key, registry, "bank")
        with client:
            yield Bank(
                fed, client, token, other, lenders, endpoint, known, fed_key, registry, transport
            )


def _first(bank: Bank, decision: str) -> tuple[int, dict[str, Any]]:
    """The first known applicant the service decides `decision` (with a joint limit)."""
    for k in bank.known:
        got = bank.decide(k)
        if got["decision"] == decision:
            return k, got
    raise AssertionError(f"no {decision} among the first {len(bank.known)} known applicants")


def test_an_approve_carries_the_horizontal_limit_less_the_federations_exposure(
    bank: Bank,
) -> None:
    k, got = _first(bank, "approve")
    joint = got["joint_credit"]
    assert joint is not None and got["status"] == "decided"
    # The PD as the model gives it on the bank's codes and the platform's true routing.
    label = bank.client.app.state.service.decider.label  # type: ignore[attr-defined]
    applicant_id, features = bank.fed.applicant(k)
    row = bank.platform.applicants.rows[applicant_id]
    sides = {1: bank.platform.served.part.table.sides(
        bank.platform.applicants.codes[row : row + 1].astype("int64"))}  # fmt: skip
    pd_ = float(label.predict_pd({f: [v] for f, v in features.items()}, sides)[0])
    request = JointRequest(
        applicant_id=EXPOSED, annual_income=INCOME, monthly_debt_payments=PAYMENTS,
        participating_lenders=LENDERS,
    )  # fmt: skip
    exposure_cents = sum(round(v.get(EXPOSED, 0) * 100) for v in EXPOSURE.values())
    expected = joint_limit(request, pd_, exposure_cents, False, load_policy().joint)
    assert joint["existing_exposure"] == pytest.approx(150_500.25)
    for field in ("capacity", "total_limit", "available"):
        assert joint[field] == pytest.approx(getattr(expected, field), abs=0.01), field
    assert joint["allocations"] == expected.allocations and joint["rule"] == expected.rule
    assert joint["available"] > 0 and set(joint["allocations"]) == set(LENDERS)
    # No exposure elsewhere: the same applicant's limit is the larger by exactly that much.
    fresh = bank.decide(k, FRESH)["joint_credit"]
    assert fresh["existing_exposure"] == 0.0 and fresh["total_limit"] == joint["total_limit"]
    assert fresh["available"] == pytest.approx(joint["available"] + 150_500.25, abs=0.01)
    assert sum(fresh["allocations"].values()) > sum(joint["allocations"].values())
    # Without a joint request: no limit, nobody asked.
    before = bank.lenders.asked
    assert bank.decide(k, None)["joint_credit"] is None and bank.lenders.asked == before


def test_a_lender_down_refers_the_approve_as_the_horizontal_service_does(bank: Bank) -> None:
    k, _ = _first(bank, "approve")
    bank.lenders.down.add("lender-b.test")
    try:
        got = bank.decide(k)
    finally:
        bank.lenders.down.clear()
    assert got["decision"] == "refer" and got["reasons"][0]["code"] == "EXPOSURE_UNAVAILABLE"
    assert "lender-b" in got["reasons"][0]["text"]
    joint = got["joint_credit"]
    assert joint["existing_exposure"] is None and joint["available"] == 0
    assert set(joint["allocations"].values()) == {0.0}


class _Down(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)


def test_the_platform_unavailable_refers_with_no_limit_and_asks_no_lender(
    bank: Bank, fed: Federation
) -> None:
    client, token, _ = _service(
        fed, _Down(), bank.lenders, bank.fed_key, bank.registry, "platform-down"
    )
    down = replace(bank, client=client, token=token)
    before = bank.lenders.asked
    with client:
        got = down.decide(bank.known[0])
        notices = {lang: down.notice(got["decision_id"], lang) for lang in ("en", "zh")}
    assert got["decision"] == "refer" and got["probability_of_default"] is None
    assert got["joint_credit"] is None and bank.lenders.asked == before
    assert got["reasons"][0]["code"] == "VERTICAL_PARTY_UNAVAILABLE"
    assert "JOINT_EXPOSURE" in got["rules_not_evaluated"]
    # Its notice names the platform and why, in either language, and gives no score.
    for lang, words in (("en", "platform's information could not be obtained"),
                        ("zh", "未能获取platform的信息")):  # fmt: skip
        r = notices[lang]
        assert r.status_code == 200, r.text
        notice = NoticeOut.model_validate(r.json())
        assert notice.score is None and notice.decided_by == ["VERTICAL_PARTY_UNAVAILABLE"]
        first = notice.principal_reasons[0]
        assert first.code == "VERTICAL_PARTY_UNAVAILABLE" and words in first.text
        assert "ConnectError" in first.text and first.feature == "party:platform"


def test_a_declines_notice_names_the_platforms_group_in_either_language(bank: Bank) -> None:
    for k in bank.known:
        got = bank.decide(k, None)
        group = [r for r in got["reasons"] if r["feature"] == "party:platform"]
        if got["decision"] == "decline" and group:
            break
    else:
        raise AssertionError("no decline whose reasons include the platform's group")
    assert group[0]["direction"] == "toward_default" and group[0]["kind"] == "model"
    texts = {"en": "Information held by platform raised the estimated risk",
             "zh": "platform所掌握的信息使估计的违约风险上升"}  # fmt: skip
    for lang, text in texts.items():
        r = bank.notice(got["decision_id"], lang)
        assert r.status_code == 200, r.text
        notice = NoticeOut.model_validate(r.json())
        assert notice.language == lang and notice.decision == "decline"
        assert notice.score is not None and notice.score.score == got["score"]
        named = [p for p in notice.principal_reasons if p.feature == "party:platform"]
        assert named and named[0].text == text and named[0].kind == "model"
        assert named[0].contribution == pytest.approx(group[0]["contribution"])
    # An approve that nobody is to review has no notice; another institution's is not found.
    _, approved = _first(bank, "approve")
    assert bank.notice(approved["decision_id"]).status_code == 409
    r = bank.client.get(f"/v1/decisions/{got['decision_id']}/notice",
                        headers={"Authorization": f"Bearer {bank.other}"})  # fmt: skip
    assert r.status_code == 404


def test_joint_limits_need_both_the_registry_and_the_federation_key(
    fed: Federation, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.json"
    new_key(keys_file, "bank")
    with pytest.raises(StartupError, match="both --exposure-registry and --federation-key"):
        load_vertical_service(
            fed.model, fed.trust, fed.kit("bank"), {"platform": "https://platform.test"},
            api_keys=keys_file, exposure_registry=tmp_path / "registry",
        )  # fmt: skip


SAME = ("decision", "status", "probability_of_default", "score", "policy_score", "reasons",
        "policy_flags", "rules_not_evaluated", "joint_credit")  # fmt: skip


def test_a_batch_decides_each_applicant_as_alone_asking_each_party_once(bank: Bank) -> None:
    ks = bank.known[:8]
    stranger = bank.fed.unknown(1)[0]  # no consent at the platform: referred, unscored
    bodies = [bank.body(k, EXPOSED if i % 2 else None) for i, k in enumerate(ks)]
    bodies.append(bank.body(stranger))
    platform_before, _ = bank.platform.audit.head()
    audit = bank.client.app.state.service.audit  # type: ignore[attr-defined]
    bank_before, _ = audit.head()
    r = bank.batch(bodies, language="zh")
    assert r.status_code == 200, r.text
    got = r.json()["decisions"]
    assert len(got) == len(bodies)
    assert bank.platform.audit.head()[0] - platform_before == len(bodies)  # one query each
    assert audit.head()[0] == bank_before + 1  # one chained entry for the batch
    assert audit.verify(derive_views)[0] == audit.head()[0]  # its view rows replay
    for i, (k, d) in enumerate(zip(ks, got, strict=False)):
        DecisionOut.model_validate(d, strict=True)
        alone = bank.decide(k, EXPOSED if i % 2 else None, language="zh")
        assert {f: d[f] for f in SAME} == {f: alone[f] for f in SAME}, k
        assert (d["joint_credit"] is None) == (i % 2 == 0)
    last = got[-1]
    assert last["decision"] == "refer" and last["score"] is None
    assert last["joint_credit"] is None and last["language"] == "zh"
    assert last["reasons"][0]["code"] == "VERTICAL_PARTY_NO_CONSENT"
    # A batch decision's notice reads the batch's record.
    refer = bank.notice(last["decision_id"])
    assert refer.status_code == 200, refer.text
    assert NoticeOut.model_validate(refer.json()).principal_reasons[0].code == (
        "VERTICAL_PARTY_NO_CONSENT"
    )


class _Tracking(httpx.AsyncBaseTransport):
    """The platform, each answer a little late; counts the queries in flight at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.now, self.most, self.total = inner, 0, 0, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.total += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.05)
            return await self.inner.handle_async_request(request)
        finally:
            self.now -= 1


def test_a_batchs_queries_run_concurrently_and_bounded(
    bank: Bank, fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vertical_decisions, "ROUTING_AT_ONCE", 3)
    tracking = _Tracking(bank.transport)
    client, token, _ = _service(
        fed, tracking, bank.lenders, bank.fed_key, bank.registry, "tracking"
    )
    other = replace(bank, client=client, token=token)
    with client:
        r = other.batch([other.body(k, None) for k in bank.known[:10]])
        assert r.status_code == 200, r.text
        too_many = other.batch([other.body(bank.known[0], None)] * 1001)
    assert tracking.total == 10 and tracking.most == 3
    assert too_many.status_code == 422 and tracking.total == 10


def test_a_decision_reads_back_where_it_stands_and_only_for_its_institution(
    bank: Bank,
) -> None:
    single = bank.decide(bank.known[0])
    batched = bank.batch([bank.body(bank.known[1])]).json()["decisions"][0]
    for decision in (single, batched):
        r = bank.client.get(f"/v1/decisions/{decision['decision_id']}", headers=bank.auth)
        assert r.status_code == 200, r.text
        read = r.json()
        assert read["response"] == decision and read["decision"] == decision["decision"]
        stages = [s["stage"] for s in read["progress"]]
        assert stages[:2] == ["received", "scored"]
        assert ("under_review" in stages) == (decision["status"] == "under_review")
        other = {"Authorization": f"Bearer {bank.other}"}
        assert bank.client.get(f"/v1/decisions/{decision['decision_id']}",
                               headers=other).status_code == 404  # fmt: skip


def test_a_lender_outside_the_federation_is_a_422_before_anyone_is_asked(bank: Bank) -> None:
    platform_before, _ = bank.platform.audit.head()
    asked = bank.lenders.asked
    body = bank.body(bank.known[0])
    body["joint"]["participating_lenders"] = ["bank", "evil"]
    for r in (
        bank.client.post("/v1/decisions", json=body, headers=bank.auth),
        bank.batch([bank.body(bank.known[1]), body]),
    ):
        assert r.status_code == 422, r.text
        assert "not in the federation: evil" in r.text
    assert bank.platform.audit.head()[0] == platform_before and bank.lenders.asked == asked


def test_a_batchs_secure_sums_are_bounded_too(
    bank: Bank, fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(joint_limits, "TOTALS_AT_ONCE", 2)
    ids = tuple(f"TIN-{k}" for k in bank.known[:6])
    client, token, _ = _service(
        fed, bank.transport, bank.lenders, bank.fed_key, bank.registry, "sums", ids
    )
    other = replace(bank, client=client, token=token)
    bank.lenders.delay, bank.lenders.most = 0.05, 0
    asked = bank.lenders.asked
    try:
        with client:
            # Six applicants, each with its own joint id: six secure sums.
            bodies = [other.body(k, f"TIN-{k}") for k in bank.known[:6]]
            r = other.batch(bodies)
    finally:
        bank.lenders.delay = 0.0
    assert r.status_code == 200, r.text
    scored = sum(d["score"] is not None for d in r.json()["decisions"])
    # Each secure sum asks every institution of the registry at once: 2 sums, 3 each.
    assert bank.lenders.asked - asked == scored * len(INSTITUTIONS)
    assert bank.lenders.most == 2 * len(INSTITUTIONS)


def test_concurrent_batches_share_the_services_bound_on_platform_queries(
    bank: Bank, fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four batches at once, the bound patched to 3: at most 3 queries in flight across all
    of them (per request, 12 were)."""
    monkeypatch.setattr(vertical_decisions, "ROUTING_AT_ONCE", 3)
    tracking = _Tracking(bank.transport)
    client, token, _ = _service(fed, tracking, bank.lenders, bank.fed_key, bank.registry, "four")
    other = replace(bank, client=client, token=token)
    codes: list[int] = []
    with client:
        bodies = [other.body(k, None) for k in bank.known[:10]]
        threads = [
            threading.Thread(target=lambda: codes.append(other.batch(bodies).status_code))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert codes == [200] * 4 and tracking.total == 40
    assert tracking.most == 3


def test_an_applicant_repeated_in_a_batch_is_asked_about_once(bank: Bank) -> None:
    """One applicant 50 times: one query to the platform (one entry in its audit log) and one
    secure sum (every lender of the registry asked once), 50 equal decisions."""
    asked, platform_before = bank.lenders.asked, bank.platform.audit.head()[0]
    r = bank.batch([bank.body(bank.known[0])] * 50)
    assert r.status_code == 200, r.text
    decisions = r.json()["decisions"]
    assert decisions[0]["score"] is not None
    assert bank.platform.audit.head()[0] - platform_before == 1
    assert bank.lenders.asked - asked == len(INSTITUTIONS)
    assert all(d[k] == decisions[0][k] for d in decisions for k in SAME)


def test_scored_applicants_join_the_stability_window_referrals_do_not(bank: Bank) -> None:
    """Stability monitoring as the horizontal service's, against the label part's held-out
    reference: each scored applicant (single or in a batch) joins the window with its score
    and the bank's features; a referral for want of the platform's routing has no score and
    does not join."""
    monitor = bank.client.app.state.monitor  # type: ignore[attr-defined]
    label = bank.client.app.state.service.decider.label  # type: ignore[attr-defined]
    assert monitor is not None and label.reference is not None

    def window() -> dict[str, Any]:
        r = bank.client.get("/v1/monitoring", headers=bank.auth)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    start = window()
    assert start["available"] and start["reference"]["rows"] == label.reference.rows
    assert set(start["features"]) == set(label.bins.names)  # the bank's own, no platform's
    stranger = bank.fed.unknown(1)[0]
    ks = bank.known[:4]
    singles = [bank.decide(k, None) for k in ks[:2]]
    assert bank.decide(stranger, None)["score"] is None
    mid = window()
    assert mid["window"]["applicants"] == start["window"]["applicants"] + 2
    r = bank.batch([bank.body(k, None) for k in (ks[2], stranger, ks[3])])
    assert r.status_code == 200, r.text
    batch = r.json()["decisions"]
    end = window()
    assert end["window"]["applicants"] == mid["window"]["applicants"] + 2
    scores, codes = monitor.store.window()  # newest first
    expected = [d["score"] for d in (*singles, batch[0], batch[2])]
    assert [int(s) for s in scores[3::-1]] == expected
    # The features as the reference's bins code them, from what the bank was sent.
    applicants = [bank.fed.applicant(k)[1] for k in ks]
    coded = label.reference.bins.codes({f: [a[f] for a in applicants] for f in label.bins.names})
    assert codes[3::-1].tolist() == coded.tolist()
    assert end["score"]["value"] is not None
    metrics = bank.client.get("/metrics").text
    assert "jointcredit_score_psi" in metrics and "jointcredit_monitoring_window" in metrics


def test_the_api_pages_document_the_vertical_bodies(bank: Bank) -> None:
    """The vertical service's OpenAPI schema declares its generated request bodies (the bank's
    features only, the `vertical` reference), the decision it answers and its errors; the
    pages are served without any asset from outside the service."""
    schema = bank.client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for path, name in (("/v1/decisions", "VerticalDecisionRequest"),
                       ("/v1/decisions:batch", "VerticalBatchRequest")):  # fmt: skip
        post = schema["paths"][path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{name}"} and name in components
        assert {"200", "401", "413", "422", "503"} <= set(post["responses"])
    single = components["VerticalDecisionRequest"]
    assert {"applicant", "vertical", "joint"} <= set(single["properties"])
    applicant = components[single["properties"]["applicant"]["$ref"].rsplit("/", 1)[1]]
    label = bank.client.app.state.service.decider.label  # type: ignore[attr-defined]
    assert set(applicant["properties"]) == set(label.bins.names)  # no platform feature
    assert {"VerticalRef", "DecisionOut", "ReviewIn"} <= set(components)
    assert "/v1/monitoring" in schema["paths"]
    for page in ("/docs", "/redoc"):
        r = bank.client.get(page)
        assert r.status_code == 200 and "/openapi.json" in r.text
        assert "cdn." not in r.text and "unpkg" not in r.text


def test_each_worker_builds_the_vertical_service_from_the_exported_arguments(
    fed: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --workers N` on a vertical model: what the CLI exports is what each worker's
    factory loads (uvicorn's processes themselves: tests/test_monitoring_workers.py); the
    workers share the service-wide bound on platform queries."""
    monkeypatch.setenv(workers.ENV, "restored after the test")
    keys_file = tmp_path / "keys.json"
    token = new_key(keys_file, "bank")
    workers.export_args({
        "model_dir": fed.model, "trust_file": fed.trust, "kit_dir": fed.kit("bank"),
        "endpoints": {"platform": "https://127.0.0.1:9"}, "policy_file": None,
        "db_url": f"sqlite:///{tmp_path / 'workers.sqlite'}", "api_keys": keys_file,
        "coordinator_key_id": None, "timeout": 0.3, "exposure_registry": None,
        "federation_key": None, "workers": 4, "max_body": 2**20, "monitoring_window": 50,
        "anchors_file": tmp_path / "a.jsonl", "anchor_key": tmp_path / "a.key",
    })  # fmt: skip
    built = workers.vertical_app_from_env()
    service = built.state.service
    assert (service.workers, service.monitoring_window) == (4, 50)
    assert built.state.decisions._routing_at_once.at_once == vertical_decisions.ROUTING_AT_ONCE // 4
    applicant_id, features = fed.applicant(fed.known(1)[0])
    body = {"applicant": features, "vertical": {"applicant_id": applicant_id}}
    with TestClient(built) as client:
        r = client.post("/v1/decisions", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.json()["reasons"][0]["code"] == "VERTICAL_PARTY_UNAVAILABLE"  # nothing listens
