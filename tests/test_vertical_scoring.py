"""Scoring a vertical applicant, in process: the platform's endpoint answers only signed
queries of another federation member (unsigned, tampered, unknown-key, revoked, stale and
replayed ones refused), only for applicants with consent (checked before whether it holds
them) and in its data, with the sides of its splits and nothing else, signed and bound to the
query; every verified query is chained in its audit log. The bank's service decides with PD,
score and reasons (the platform one reason group), and refers naming the platform when its
answer is missing, late, unsigned, tampered or signed by another key."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from vertical_helpers import Federation, vertical_federation

from jointcredit.data.errors import DataValidationError
from jointcredit.data.vertical_schema import load_vertical_schema
from jointcredit.service.audit import AuditLog
from jointcredit.service.auth import new_key
from jointcredit.service.records import derive_views
from jointcredit.service.schemas import DecisionOut
from jointcredit.service.vertical_kit import VerticalKit, load_kit
from jointcredit.service.vertical_party import (
    SIDES_PATH,
    Applicants,
    FeaturePartyEndpoint,
    ServedPart,
    SidesAnswer,
    SidesRequest,
)
from jointcredit.service.vertical_party_app import party_app
from jointcredit.service.vertical_service import create_vertical_app, load_vertical_service
from jointcredit.service.vertical_wire import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIME_HEADER,
    Nonces,
    SignatureRefused,
    sign,
    verify,
)
from jointcredit.trust import keys, store

pytestmark = pytest.mark.integration

CONSENT = "consent-7"


@dataclass
class Platform:
    fed: Federation
    endpoint: FeaturePartyEndpoint
    kit: VerticalKit  # the platform's
    bank: VerticalKit
    client: TestClient
    applicant: str  # a bank applicant the platform holds, with consent
    stranger: str  # one it does not hold, with consent


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return vertical_federation(tmp_path_factory.mktemp("vfed"), trees=6)


@pytest.fixture(scope="module")
def platform(fed: Federation) -> Iterator[Platform]:
    kit = load_kit(fed.kit("platform"))
    served = ServedPart.load(fed.model, "platform", kit.trust)
    applicants = Applicants.load(fed.platform_data, served, load_vertical_schema(fed.schema))
    endpoint = FeaturePartyEndpoint(
        served, applicants, AuditLog(f"sqlite:///{fed.root / 'platform.sqlite'}")
    )
    known, stranger = fed.applicant(fed.known(1)[0])[0], fed.applicant(fed.unknown(1)[0])[0]
    endpoint.consents.add("bank", CONSENT, known, "vertical")
    endpoint.consents.add("bank", "consent-stranger", stranger, "vertical")
    with TestClient(party_app(endpoint, kit)) as client:
        yield Platform(fed, endpoint, kit, load_kit(fed.kit("bank")), client, known, stranger)


def _query(p: Platform, applicant: str, consent: str | None = CONSENT, **over: str) -> bytes:
    body = {"applicant_id": applicant, "consent_id": consent, "model": p.endpoint.served.model_id}
    return json.dumps({**body, **over}).encode()


def _post(p: Platform, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    h = sign(p.bank.signing_key, SIDES_PATH, body) if headers is None else headers
    return p.client.post(SIDES_PATH, content=body, headers=h)


def _answer(p: Platform, r: httpx.Response, request_nonce: str) -> SidesAnswer:
    """The answer, after checking it is signed by the platform and bound to the query."""
    verify(p.bank.trust, r.headers, SIDES_PATH, r.content, Nonces(), expected="platform",
           answering=(request_nonce, r.status_code))  # fmt: skip
    return SidesAnswer.model_validate_json(r.content)


def test_an_applicant_with_consent_gets_only_the_sides_of_the_platforms_splits(
    platform: Platform,
) -> None:
    body = _query(platform, platform.applicant)
    headers = sign(platform.bank.signing_key, SIDES_PATH, body)
    r = _post(platform, body, headers)
    assert r.status_code == 200
    answer = _answer(platform, r, headers[NONCE_HEADER])
    table = platform.endpoint.served.part.table
    assert answer.status == "found" and len(answer.sides or "") == len(table)
    assert set(json.loads(r.content)) == {"status", "party", "model", "sides", "consent_problem"}
    row = platform.endpoint.applicants.rows[platform.applicant]
    codes = platform.endpoint.applicants.codes[row : row + 1].astype("int64")
    assert answer.sides == "".join("L" if s else "R" for s in table.sides(codes)[0])
    # The answer is bound to its query: checked against another query's nonce it fails.
    with pytest.raises(SignatureRefused, match="bad-signature"):
        _answer(platform, r, "0" * 32)


def test_consent_is_checked_before_membership_and_not_found_is_its_own_answer(
    platform: Platform,
) -> None:
    for applicant, consent, status, expected in [
        (platform.applicant, None, 403, "consent_required"),
        (platform.applicant, "consent-stranger", 403, "consent_required"),  # another's
        ("no-such-person", None, 403, "consent_required"),  # no membership leak
        (platform.stranger, "consent-stranger", 404, "not_found"),
    ]:
        body = _query(platform, applicant, consent)
        headers = sign(platform.bank.signing_key, SIDES_PATH, body)
        r = _post(platform, body, headers)
        assert r.status_code == status, (applicant, consent, r.text)
        answer = _answer(platform, r, headers[NONCE_HEADER])
        assert answer.status == expected and answer.sides is None
    r = _post(platform, _query(platform, platform.applicant, model="ab" * 32))
    assert r.status_code == 409 and json.loads(r.content)["status"] == "other_model"


def test_only_the_label_party_its_part_names_is_answered(platform: Platform) -> None:
    """Another member of the federation (a second platform, say) with a consent of its own
    still gets no routing: the part records the label party it was trained for."""
    endpoint = platform.endpoint
    assert endpoint.served.part.label_party == "bank"
    endpoint.consents.add("other", "consent-other", platform.applicant, "vertical")
    query = SidesRequest.model_validate_json(_query(platform, platform.applicant, "consent-other"))
    status, answer = endpoint.answer("other", query)
    assert (status, answer.status, answer.sides) == (403, "not_label_party", None)
    status, answer = endpoint.answer(
        "bank", SidesRequest.model_validate_json(_query(platform, platform.applicant))
    )
    assert (status, answer.status) == (200, "found")


def test_a_platform_refuses_to_serve_under_a_schema_naming_another_label_party(
    platform: Platform, tmp_path: Path
) -> None:
    text = platform.fed.schema.read_text().replace("[parties.bank]", "[parties.lender]")
    (tmp_path / "schema.toml").write_text(text)
    with pytest.raises(DataValidationError, match="trained for label party 'bank'"):
        Applicants.load(
            platform.fed.platform_data,
            platform.endpoint.served,
            load_vertical_schema(tmp_path / "schema.toml"),
        )


def test_unsigned_tampered_unknown_revoked_stale_and_replayed_queries_are_refused(
    platform: Platform, fed: Federation
) -> None:
    body = _query(platform, platform.applicant)
    good = sign(platform.bank.signing_key, SIDES_PATH, body)

    def refused(r: httpx.Response) -> str:
        assert r.status_code == 401, r.text
        code: str = json.loads(r.content)["detail"]
        return code

    assert refused(platform.client.post(SIDES_PATH, content=body)) == "unsigned"
    tampered = body.replace(b"consent-7", b"consent-8")
    assert refused(_post(platform, tampered, good)) == "bad-signature"
    stranger = keys.generate()
    assert refused(_post(platform, body, sign(stranger, SIDES_PATH, body))) == "unknown-key"
    other = dict(sign(platform.bank.signing_key, SIDES_PATH, body))
    other[TIME_HEADER] = str(int(time.time()) - 3600)
    assert refused(_post(platform, body, other)) == "stale"
    mangled = {**good, SIGNATURE_HEADER: "x"}
    assert refused(_post(platform, body, mangled)) == "malformed-signature"
    own = sign(platform.kit.signing_key, SIDES_PATH, body)
    assert refused(_post(platform, body, own)) == "wrong-party"
    assert _post(platform, body, good).status_code == 200
    assert refused(_post(platform, body, good)) == "replayed"
    # A revoked key: the same bank key, refused once the trust store revokes it.
    coordinator = keys.load_private_key(fed.kits / "coordinator" / "coordinator.key")
    bank_key = keys.key_id(platform.bank.signing_key)
    revoked, _ = store.revoke(platform.kit.trust, coordinator, key_id=bank_key, reason="stolen")
    nonces = Nonces()
    fresh = sign(platform.bank.signing_key, SIDES_PATH, body)
    with pytest.raises(SignatureRefused, match="revoked-key"):
        verify(revoked, fresh, SIDES_PATH, body, nonces)


def test_every_verified_query_is_chained_and_refused_ones_are_not(platform: Platform) -> None:
    log = platform.endpoint.audit
    before, _ = log.head()
    body = _query(platform, platform.applicant)
    assert _post(platform, body).status_code == 200
    assert platform.client.post(SIDES_PATH, content=body).status_code == 401
    after, _ = log.head()
    assert after == before + 1
    seq, _head = log.verify(derive_views)
    assert seq == after


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


def _decide(
    client: TestClient, token: str, fed: Federation, k: int, consent: str | None = CONSENT,
    language: str = "en",
) -> dict[str, object]:  # fmt: skip
    applicant_id, features = fed.applicant(k)
    body = {
        "applicant": features,
        "vertical": {"applicant_id": applicant_id, "consent_id": consent},
        "language": language,
    }
    r = client.post("/v1/decisions", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    out: dict[str, object] = r.json()
    return out


def test_the_service_decides_with_the_platforms_routing_and_its_reason_group(
    platform: Platform, fed: Federation
) -> None:
    client, token = _service(fed, httpx.ASGITransport(platform.client.app), "decides")
    with client:
        k = fed.known(1)[0]
        got = _decide(client, token, fed, k)
    assert got["decision"] in ("approve", "decline", "refer")
    pd_ = got["probability_of_default"]
    assert isinstance(pd_, float) and 0 < pd_ < 1 and isinstance(got["score"], int)
    # The PD is the model's on the bank's codes and the platform's true routing.
    label = client.app.state.service.decider.label  # type: ignore[attr-defined]
    row = platform.endpoint.applicants.rows[platform.applicant]
    sides = {1: platform.endpoint.served.part.table.sides(
        platform.endpoint.applicants.codes[row : row + 1].astype("int64"))}  # fmt: skip
    expected = label.predict_pd({f: [v] for f, v in fed.applicant(k)[1].items()}, sides)[0]
    assert pd_ == pytest.approx(expected, abs=1e-6)
    decider = client.app.state.service.decider  # type: ignore[attr-defined]
    assert decider.columns[-1] == "party:platform"
    DecisionOut.model_validate(got, strict=True)


@dataclass
class _Broken(httpx.AsyncBaseTransport):
    """The platform's answers as an attacker or a failure leaves them."""

    inner: httpx.AsyncBaseTransport
    how: str
    key: object = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.how == "down":
            raise httpx.ConnectError("connection refused")
        if self.how == "slow":
            await asyncio.sleep(2)
        r = await self.inner.handle_async_request(request)
        body = await r.aread()
        headers = dict(r.headers)
        if self.how == "unsigned":
            headers = {"content-type": "application/json"}
        elif self.how == "tampered":
            body = body.replace(b'"L', b'"R', 1).replace(b"LR", b"RR", 1)
        elif self.how == "huge":  # an endless answer is cut off, not buffered
            body = b"L" * (2 * 2**20)
        elif self.how == "foreign":  # validly signed, by another member's key
            nonce = request.headers[NONCE_HEADER]
            headers = sign(self.key, SIDES_PATH, body, answering=(nonce, r.status_code))  # type: ignore[arg-type]
        return httpx.Response(r.status_code, headers=headers, content=body)


@pytest.mark.parametrize("how", ["down", "slow", "unsigned", "tampered", "foreign", "huge"])
def test_a_missing_or_untrustworthy_answer_refers_naming_the_platform(
    platform: Platform, fed: Federation, how: str
) -> None:
    inner = httpx.ASGITransport(platform.client.app)
    transport = _Broken(inner, how, platform.bank.signing_key)
    client, token = _service(fed, transport, f"broken-{how}")
    with client:
        for language, word in (("en", "platform's information could not be obtained"),
                               ("zh", "未能获取platform的信息")):  # fmt: skip
            got = _decide(client, token, fed, fed.known(1)[0], language=language)
            assert got["decision"] == "refer" and got["status"] == "under_review"
            assert got["probability_of_default"] is None and got["score"] is None
            first = got["reasons"][0]  # type: ignore[index]
            assert first["code"] == "VERTICAL_PARTY_UNAVAILABLE" and word in first["text"]
            assert first["feature"] == "party:platform"


def test_a_platform_serving_another_label_party_gets_a_refer_saying_so(
    platform: Platform, fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = platform.endpoint.served
    other = dataclasses.replace(served, part=dataclasses.replace(served.part, label_party="lender"))
    monkeypatch.setattr(platform.endpoint, "served", other)
    client, token = _service(fed, httpx.ASGITransport(platform.client.app), "other-label")
    with client:
        got = _decide(client, token, fed, fed.known(1)[0])
    assert got["decision"] == "refer" and got["score"] is None
    first = got["reasons"][0]  # type: ignore[index]
    assert first["code"] == "VERTICAL_PARTY_UNAVAILABLE"
    assert "trained for another label party" in first["text"]


def test_no_consent_and_no_data_refer_with_their_own_reasons(
    platform: Platform, fed: Federation
) -> None:
    client, token = _service(fed, httpx.ASGITransport(platform.client.app), "reasons")
    with client:
        no_consent = _decide(client, token, fed, fed.known(1)[0], consent=None)
        stranger_k = fed.unknown(1)[0]
        no_data = _decide(client, token, fed, stranger_k, consent="consent-stranger")
    assert no_consent["reasons"][0]["code"] == "VERTICAL_PARTY_NO_CONSENT"  # type: ignore[index]
    assert no_data["reasons"][0]["code"] == "VERTICAL_PARTY_NO_DATA"  # type: ignore[index]
    assert no_data["decision"] == "refer" and no_data["score"] is None
    for got in (no_consent, no_data):  # the horizontal service's response form
        DecisionOut.model_validate(got, strict=True)


def test_a_kit_of_another_party_than_the_models_label_party_is_refused(fed: Federation) -> None:
    from jointcredit.service.loader import StartupError

    with pytest.raises(StartupError, match="label party is bank"):
        load_vertical_service(
            fed.model, fed.trust, fed.kit("platform"), {"platform": "https://x"},
            api_keys=Path("/nonexistent"),
        )  # fmt: skip


def test_a_card_whose_trees_name_splits_beyond_a_partys_count_is_refused(
    fed: Federation,
) -> None:
    from dataclasses import replace

    from jointcredit.models.vertical.artifact import load_label_part
    from jointcredit.service.policy import load_policy
    from jointcredit.service.vertical_decide import VerticalDecider
    from jointcredit.trust.store import load_store

    label = load_label_part(fed.model, load_store(fed.trust))
    entry = label.card.parties["platform"].model_copy(update={"splits": 1})
    card = label.card.model_copy(update={"parties": {"platform": entry}})
    with pytest.raises(ValueError, match="beyond its 1 splits"):
        VerticalDecider(replace(label, card=card), load_policy(None))
