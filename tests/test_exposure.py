"""Exposure across the federation by a secure sum: the masking protocol and the signed
registry (in process), an institution's endpoint and the service's joint limits over HTTP with
the institutions' apps in process, and `jointcredit exposure serve` as real processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from service_helpers import audit_verify, free_port, signed_artifact
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.consent import ConsentRegistry
from jointcredit.service.exposure import (
    ISSUED_HEADER,
    MAC_HEADER,
    MODULUS,
    ExposureError,
    Institution,
    Ledger,
    ShareRequest,
    mask,
    masked_share,
    pairwise_key,
    pseudonym,
    request_key,
    request_mac,
    total_from_shares,
)
from jointcredit.service.exposure_http import (
    TOTALS_AT_ONCE,
    ExposureClient,
    ExposureResult,
    institution_app,
)
from jointcredit.service.loader import load_service
from jointcredit.service.policy import load_policy
from jointcredit.service.registry import (
    Registry,
    RegistryEntry,
    load_registry,
    new_federation_key,
    public_b64,
    sign_registry,
)
from jointcredit.service.writer import AuditWriter

INSTITUTIONS = ["bank-a", "bank-b", "cf-c"]
LEDGERS = {
    "bank-a": {"TIN-1": 120000.0, "TIN-2": 5000.0},
    "bank-b": {"TIN-1": 30500.25},
    "cf-c": {"TIN-3": 999.0},
}


def _keys(tmp: Path | None = None) -> dict[str, Any]:
    return {i: X25519PrivateKey.generate() for i in INSTITUTIONS}


def _registry(keys: dict[str, Any], urls: dict[str, str] | None = None) -> Registry:
    return Registry(
        federation="test",
        institutions={
            i: RegistryEntry(url=(urls or {}).get(i, "http://127.0.0.1:1"),
                             x25519_public=public_b64(k.public_key()))
            for i, k in keys.items()
        },
    )  # fmt: skip


# -- the protocol, in process -------------------------------------------------------------------


def test_masked_shares_sum_to_the_total_and_hide_each_figure(tmp_path: Path) -> None:
    fed_key = bytes.fromhex(new_federation_key())
    keys = _keys(tmp_path)
    registry = _registry(keys)
    nodes = [
        Institution(
            i, keys[i], registry,
            Ledger({pseudonym(fed_key, a): round(v * 100) for a, v in LEDGERS[i].items()}),
        )
        for i in INSTITUTIONS
    ]  # fmt: skip
    request = ShareRequest(
        query_id="ab" * 16, pseudonym=pseudonym(fed_key, "TIN-1"), participants=INSTITUTIONS
    )
    shares = [int(n.share(request).share) for n in nodes]
    assert total_from_shares(shares) == 12000000 + 3050025
    # No share is its institution's figure, and none is small: each looks uniformly random.
    assert shares[0] != 12000000 and shares[1] != 3050025 and shares[2] != 0
    assert all(s > MODULUS // 2**20 for s in shares)
    # A query id is answered once: re-asking could cancel masks selectively.
    with pytest.raises(ExposureError, match="already answered"):
        nodes[0].share(request)
    # Too few participants (a nearly unmasked share) or outsiders are refused.
    with pytest.raises(ValueError):
        ShareRequest(query_id="cd" * 16, pseudonym=request.pseudonym, participants=["bank-a"])
    outsider = ShareRequest(
        query_id="ef" * 16, pseudonym=request.pseudonym, participants=["bank-a", "bank-b", "evil"]
    )
    with pytest.raises(ExposureError, match="not in the registry: evil"):
        nodes[0].share(outsider)


def test_only_the_whole_registry_may_ask(tmp_path: Path) -> None:
    # Four lenders: bank-b and cf-c collude and ask bank-a with participants {a, b, c}. Were it
    # answered, bank-a's share would carry only the masks b and c know: they could unmask it.
    fed_key = bytes.fromhex(new_federation_key())
    keys = {**_keys(tmp_path), "mf-d": X25519PrivateKey.generate()}
    registry = _registry(keys)
    ledger = Ledger({pseudonym(fed_key, "TIN-1"): 12000000})
    bank_a = Institution("bank-a", keys["bank-a"], registry, ledger)
    subset = ShareRequest(
        query_id="12" * 16, pseudonym=pseudonym(fed_key, "TIN-1"), participants=INSTITUTIONS
    )
    with pytest.raises(ExposureError, match=r"every institution .* \(missing: mf-d\)"):
        bank_a.share(subset)
    # What the refusal prevents: the share a subset query would have drawn is bank-a's figure
    # plus the two masks b and c share with it, which they can compute and remove.
    colluders = {
        other: pairwise_key(keys[other], keys["bank-a"].public_key(), other, "bank-a")
        for other in ("bank-b", "cf-c")
    }
    would_be = masked_share(
        "bank-a", 12000000, INSTITUTIONS, bank_a.pairwise, subset.query_id, subset.pseudonym
    )
    known = sum(mask(k, subset.query_id, subset.pseudonym) for k in colluders.values())
    assert (would_be - known) % MODULUS == 12000000
    # With the whole registry the mask toward mf-d still hides it from them.
    whole = ShareRequest(query_id="34" * 16, pseudonym=subset.pseudonym, participants=sorted(keys))
    share = int(bank_a.share(whole).share)
    known = sum(mask(k, whole.query_id, whole.pseudonym) for k in colluders.values())
    assert (share - known) % MODULUS != 12000000  # the mask toward mf-d still hides it


def test_signed_registry_verifies_and_a_swapped_key_is_refused(tmp_path: Path) -> None:
    from jointcredit.trust import keys, store

    coordinator = keys.generate()
    trust = store.create("test", coordinator)
    (tmp_path / "registry.json").write_text(_registry(_keys(tmp_path)).model_dump_json())
    signed = tmp_path / "signed"
    sign_registry(tmp_path / "registry.json", signed, coordinator, trust)
    assert set(load_registry(signed, trust).institutions) == set(INSTITUTIONS)
    with pytest.raises(ExposureError, match="needs the trust store"):
        load_registry(signed, None)
    # Someone swaps bank-b's listed key for their own: the signature no longer covers it.
    data = json.loads((signed / "registry.json").read_text())
    data["institutions"]["bank-b"]["x25519_public"] = data["institutions"]["cf-c"]["x25519_public"]
    (signed / "registry.json").write_text(json.dumps(data))
    with pytest.raises(ExposureError, match="does not verify"):
        load_registry(signed, trust)
    # Another federation's coordinator cannot sign for this one.
    other = keys.generate()
    with pytest.raises(ExposureError):
        sign_registry(tmp_path / "registry.json", tmp_path / "x", other, trust)


# -- over HTTP, the institutions in process ---------------------------------------------------


class Institutions(httpx.AsyncBaseTransport):
    """Routes the service's share requests to the institutions' apps by host; a host in
    `down` does not answer."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        self.apps = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}
        self.down: set[str] = set()
        self.asked = 0  # share requests sent

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked += 1
        if request.url.host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.apps[request.url.host].handle_async_request(request)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("exposure")
    fed_key = bytes.fromhex(new_federation_key())
    keys = _keys()
    registry = _registry(keys, {i: f"http://{i}.test" for i in INSTITUTIONS})
    apps = {
        f"{i}.test": institution_app(
            Institution(i, keys[i], registry, Ledger.load(_ledger(root, i), fed_key)), fed_key
        )
        for i in INSTITUTIONS
    }
    model_dir = signed_artifact(root / "run")
    token = new_key(root / "api.json", "bank-a")
    service = load_service(model_dir, root / "run" / "trust.json", api_keys=root / "api.json",
                           db_url=f"sqlite:///{root / 'a.sqlite'}")  # fmt: skip
    transport = Institutions(apps)
    service.exposure = ExposureClient(registry, fed_key, transport=transport)
    consents = ConsentRegistry(service.audit)
    for applicant in ("TIN-1", "TIN-404"):
        consents.add("bank-a", f"c-{applicant}", applicant, "exposure")
    with TestClient(create_app(service)) as client:
        yield {"client": client, "token": token, "apps": apps, "transport": transport,
               "fed_key": fed_key, "consents": consents,
               "db": f"sqlite:///{root / 'a.sqlite'}"}  # fmt: skip


def _ledger(root: Path, institution: str) -> Path:
    path = root / f"{institution}.ledger.json"
    path.write_text(json.dumps(LEDGERS[institution]))
    return path


def _request(
    client: TestClient, token: str, applicant_id: str, lenders: list[str],
    consent: str | None = "", **extra: Any,
) -> Any:  # fmt: skip
    """A decision asking for a joint limit (`consent`: its consent id; "": the one the
    fixture registered for this applicant; None: none)."""
    spec = client.get("/openapi.json").json()
    body = spec["components"]["schemas"]["DecisionRequest"]["examples"][0]
    body["joint"] = {
        "applicant_id": applicant_id, "annual_income": 600000, "monthly_debt_payments": 2000,
        "participating_lenders": lenders,
    }  # fmt: skip
    if consent is not None:
        body["joint"]["consent_id"] = consent or f"c-{applicant_id}"
    body.update(extra)
    return client.post("/v1/decisions", json=body, headers={"Authorization": f"Bearer {token}"})


@pytest.mark.integration
def test_joint_limit_subtracts_the_secure_sum_of_exposure(federation: dict[str, Any]) -> None:
    client, token = federation["client"], federation["token"]
    r = _request(client, token, "TIN-1", ["bank-a", "cf-c"])
    assert r.status_code == 200, r.text
    joint = r.json()["joint_credit"]
    assert joint["existing_exposure"] == pytest.approx(150500.25)
    assert joint["available"] == pytest.approx(max(0.0, joint["total_limit"] - 150500.25), abs=0.01)
    assert set(joint["allocations"]) == {"bank-a", "cf-c"}
    fresh = _request(client, token, "TIN-404", ["bank-a", "cf-c"]).json()["joint_credit"]
    assert fresh["existing_exposure"] == 0.0
    unknown = _request(client, token, "TIN-1", ["bank-a", "evil"])
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == [
        {"field": "joint.participating_lenders", "reason": "not in the federation: evil"}
    ]


class _Counted(httpx.AsyncClient):
    """httpx's client, counting how many are made and closed."""

    made: ClassVar[list[_Counted]] = []
    closed: ClassVar[list[_Counted]] = []

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.made.append(self)

    async def aclose(self) -> None:
        self.closed.append(self)
        await super().aclose()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> type[_Counted]:
    monkeypatch.setattr(_Counted, "made", [])
    monkeypatch.setattr(_Counted, "closed", [])
    monkeypatch.setattr(httpx, "AsyncClient", _Counted)
    return _Counted


def _institutions(root: Path, fed_key: bytes) -> tuple[Registry, Institutions]:
    keys = _keys()
    registry = _registry(keys, {i: f"http://{i}.test" for i in INSTITUTIONS})
    apps = {
        f"{i}.test": institution_app(
            Institution(i, keys[i], registry, Ledger.load(_ledger(root, i), fed_key)), fed_key
        )
        for i in INSTITUTIONS
    }
    return registry, Institutions(apps)


def test_concurrent_totals_share_one_client_until_it_is_closed(
    tmp_path: Path, counted: type[_Counted]
) -> None:
    """One connection pool for every applicant and lender (not a client, so a TLS handshake
    per lender, per applicant); `close` closes it, and a later query makes another."""
    fed_key = bytes.fromhex(new_federation_key())
    registry, transport = _institutions(tmp_path, fed_key)
    exposure = ExposureClient(registry, fed_key, timeout=3.5, transport=transport)

    async def run() -> list[int | None]:
        totals = await asyncio.gather(*(exposure.total(a) for a in ("TIN-1", "TIN-2", "TIN-3")))
        assert len(counted.made) == 1 and not counted.closed
        await exposure.close()
        assert counted.closed == counted.made
        again = await exposure.total("TIN-1")
        await exposure.close()
        return [t.total_cents for t in [*totals, again]]

    assert asyncio.run(run()) == [12000000 + 3050025, 500000, 99900, 12000000 + 3050025]
    assert len(counted.made) == 2 and counted.closed == counted.made
    assert counted.made[0].timeout == httpx.Timeout(3.5)  # the client's timeout kept
    assert transport.asked == 4 * len(INSTITUTIONS)  # through the injected transport


@pytest.mark.integration
def test_the_service_queries_through_one_client_and_closes_it_at_shutdown(
    tmp_path: Path, counted: type[_Counted]
) -> None:
    fed_key = bytes.fromhex(new_federation_key())
    registry, transport = _institutions(tmp_path, fed_key)
    token = new_key(tmp_path / "api.json", "bank-a")
    service = load_service(signed_artifact(tmp_path / "run"), tmp_path / "run" / "trust.json",
                           api_keys=tmp_path / "api.json",
                           db_url=f"sqlite:///{tmp_path / 'a.sqlite'}")  # fmt: skip
    service.exposure = ExposureClient(registry, fed_key, transport=transport)
    consents = ConsentRegistry(service.audit)
    with TestClient(create_app(service)) as client:
        for applicant in ("TIN-1", "TIN-2"):
            consents.add("bank-a", f"c-{applicant}", applicant, "exposure")
            r = _request(client, token, applicant, ["bank-a", "cf-c"])
            assert r.json()["joint_credit"]["existing_exposure"] is not None, r.text
        assert transport.asked == 2 * len(INSTITUTIONS)
        assert len(counted.made) == 1 and not counted.closed
    assert counted.closed == counted.made  # the service's shutdown closed it


@pytest.mark.integration
def test_one_institution_down_gives_refer_not_a_wrong_number(federation: dict[str, Any]) -> None:
    federation["transport"].down.add("bank-b.test")
    try:
        r = _request(federation["client"], federation["token"], "TIN-1", ["bank-a", "cf-c"])
    finally:
        federation["transport"].down.clear()
    d = r.json()
    assert d["decision"] in {"refer", "decline"}
    flags = {f["code"]: f for f in d["policy_flags"]}
    assert "bank-b" in flags["EXPOSURE_UNAVAILABLE"]["text"]
    if d["decision"] == "refer":
        assert d["reasons"][0]["code"] == "EXPOSURE_UNAVAILABLE"
    assert d["joint_credit"]["existing_exposure"] is None
    assert d["joint_credit"]["available"] == 0


def _refused(d: dict[str, Any], problem: str, language: str = "en") -> None:
    """The exposure rule was not evaluated for want of consent, and the decision says why."""
    texts = load_policy().consent
    assert "JOINT_EXPOSURE" in d["rules_not_evaluated"]
    flags = {f["code"]: f for f in d["policy_flags"]}
    assert flags["CONSENT_REQUIRED"]["text"] == texts.why(problem, language)  # type: ignore[arg-type]
    assert d["decision"] in {"refer", "decline"}
    if d["decision"] == "refer":
        assert d["reasons"][0]["code"] == "CONSENT_REQUIRED"
    assert d["joint_credit"]["existing_exposure"] is None
    assert d["joint_credit"]["available"] == 0


@pytest.mark.integration
def test_without_a_valid_consent_no_lender_is_asked_and_the_decision_says_why(
    federation: dict[str, Any],
) -> None:
    client, token, transport = federation["client"], federation["token"], federation["transport"]
    federation["consents"].add("bank-b", "c-elsewhere", "TIN-1", "exposure")
    cases = [
        (None, "missing"),
        ("c-nope", "unknown"),
        ("c-TIN-404", "mismatch"),
        ("c-elsewhere", "unknown"),
    ]  # another institution's consent is not the caller's
    for consent, problem in cases:
        before = transport.asked
        r = _request(client, token, "TIN-1", ["bank-a", "cf-c"], consent)
        assert r.status_code == 200, r.text
        assert transport.asked == before, consent
        _refused(r.json(), problem)
    zh = _request(client, token, "TIN-1", ["bank-a", "cf-c"], None, language="zh").json()
    _refused(zh, "missing", "zh")
    expiring = datetime.now(UTC) + timedelta(seconds=1)
    federation["consents"].add(
        "bank-a", "c-short", "TIN-1", "exposure", expiring.isoformat(timespec="microseconds")
    )
    time.sleep(max(0.0, (expiring - datetime.now(UTC)).total_seconds()) + 0.05)
    _refused(_request(client, token, "TIN-1", ["bank-a", "cf-c"], "c-short").json(), "expired")


@pytest.mark.integration
def test_a_revoked_consent_stops_the_next_query_at_once(federation: dict[str, Any]) -> None:
    client, token, transport = federation["client"], federation["token"], federation["transport"]
    from jointcredit.cli.main import app

    cli = CliRunner()
    db = ["--db", federation["db"], "--institution", "bank-a"]
    added = cli.invoke(app, ["consent", "add", *db, "--applicant-ref", "TIN-1", "--id", "c-rev"])
    assert added.exit_code == 0, added.output
    before = transport.asked
    ok = _request(client, token, "TIN-1", ["bank-a", "cf-c"], "c-rev").json()
    assert transport.asked == before + len(INSTITUTIONS)
    assert ok["joint_credit"]["existing_exposure"] == pytest.approx(150500.25)
    assert "JOINT_EXPOSURE" not in ok["rules_not_evaluated"]
    # Revoked by another process's connection to the database (as `--workers N` share it).
    revoked = cli.invoke(app, ["consent", "revoke", "c-rev", *db])
    assert revoked.exit_code == 0, revoked.output
    before = transport.asked
    _refused(_request(client, token, "TIN-1", ["bank-a", "cf-c"], "c-rev").json(), "revoked")
    assert transport.asked == before
    again = cli.invoke(app, ["consent", "revoke", "c-rev", *db])
    assert again.exit_code == 2 and "already revoked" in again.output


@pytest.mark.integration
def test_consent_commands_add_show_revoke_and_audit_each_change(tmp_path: Path) -> None:
    from jointcredit.cli.main import app
    from jointcredit.service.audit import AuditLog

    db = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    AuditLog(db).close()
    cli = CliRunner()
    where = ["--db", db, "--institution", "bank-a"]

    def run(*args: str) -> Any:
        return cli.invoke(app, ["consent", *args], env={"COLUMNS": "300"})

    assert run("add", *where, "--applicant-ref", "TIN-9", "--id", "c1",
               "--expires", "2099-01-01").exit_code == 0  # fmt: skip
    assert run("add", *where, "--applicant-ref", "TIN-8", "--id", "c2").exit_code == 0
    shown = run("show", *where)
    assert shown.exit_code == 0
    assert "c1  valid  applicant TIN-9" in shown.output and "expires 2099-01-01" in shown.output
    assert "c2  valid  applicant TIN-8" in shown.output
    assert run("revoke", "c1", *where).exit_code == 0
    assert "c1  revoked" in run("show", *where, "c1").output
    assert run("show", "--db", db, "--institution", "bank-b").output.strip() == (
        "bank-b has no consents"
    )
    for args, problem in [
        (("add", *where, "--applicant-ref", "TIN-9", "--id", "c1"), "already has a consent c1"),
        (("add", *where, "--applicant-ref", "TIN-9", "--id", "c3", "--purpose", "marketing"),
         "--purpose must be one of: exposure"),
        (("add", *where, "--applicant-ref", "TIN-9", "--id", "c3", "--expires", "soon"),
         "not an ISO 8601"),
        (("add", *where, "--applicant-ref", "TIN-9", "--id", "c3", "--expires", "2001-01-01"),
         "not in the future"),
        (("revoke", "c9", *where), "has no consent c9"),
    ]:  # fmt: skip
        r = run(*args)
        assert r.exit_code == 2 and problem in r.output, (args, r.output)
    assert run("show", *where, "c9").exit_code == 1
    log = AuditLog(db, create=False)
    try:
        kinds = [
            (row.kind, row.decision_id, json.loads(row.payload)["action"]) for row in log.rows()
        ]
    finally:
        log.close()
    assert kinds == [("consent", "c1", "add"), ("consent", "c2", "add"),
                     ("consent", "c1", "revoke")]  # fmt: skip
    assert audit_verify(db).exit_code == 0
    # A revoke undone in the table behind the log's back is found.
    engine = create_engine(db)
    with engine.begin() as conn:
        conn.execute(text("UPDATE consents SET revoked_at = NULL WHERE consent_id = 'c1'"))
    engine.dispose()
    broken = audit_verify(db)
    assert broken.exit_code == 1
    assert "consent c1 of bank-a: consents table differs from the log" in broken.output


@pytest.mark.integration
def test_only_holders_of_the_federation_key_may_ask_for_a_share(
    federation: dict[str, Any],
) -> None:
    key = request_key(federation["fed_key"])
    body = json.dumps({"query_id": "ab" * 16, "pseudonym": "0" * 64,
                       "participants": sorted(INSTITUTIONS)}).encode()  # fmt: skip
    now = int(time.time())
    with TestClient(federation["apps"]["bank-a.test"]) as bank_a:

        def post(mac: str, issued: int, content: bytes = body) -> httpx.Response:
            headers = {MAC_HEADER: mac, ISSUED_HEADER: str(issued),
                       "Content-Type": "application/json"}  # fmt: skip
            response: httpx.Response = bank_a.post("/v1/exposure/share", content=content,
                                                   headers=headers)  # fmt: skip
            return response

        unsigned = bank_a.post("/v1/exposure/share", content=body)
        assert unsigned.status_code == 401
        assert post(request_mac(b"x" * 32, now, body), now).status_code == 401  # another key
        altered = body.replace(b'"0000', b'"1111', 1)
        assert post(request_mac(key, now, body), now, altered).status_code == 401  # changed
        old = now - 3600
        assert post(request_mac(key, old, body), old).status_code == 401  # stale
        ok = post(request_mac(key, now, body), now)  # the refused ones used no query id
        assert ok.status_code == 200, ok.text
        assert post(request_mac(key, now, body), now).status_code == 409  # replay
        assert bank_a.get("/healthz").json() == {"status": "ok", "institution": "bank-a"}


# -- `jointcredit exposure serve` as real processes ---------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jointcredit.cli", *args]


def _wait(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read() if proc.stderr else "died")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@pytest.mark.e2e
def test_exposure_serve_processes_answer_a_secure_sum(tmp_path: Path) -> None:
    """Keys, a signed registry and the federation key made by the CLI; three `jointcredit
    exposure serve` processes; the service's client adds their shares up, and reports who did
    not answer once one is stopped."""

    subprocess.run(_cli("exposure", "federation-key", "--out", str(tmp_path / "fed.key")),
                   check=True)  # fmt: skip
    ports = {i: free_port() for i in INSTITUTIONS}
    signed_artifact(tmp_path / "run")  # its trust store is the federation's
    trust = tmp_path / "run" / "trust.json"
    federation = json.loads(trust.read_bytes())["federation"]
    registry: dict[str, Any] = {"federation": federation, "institutions": {}}
    for inst in INSTITUTIONS:
        out = subprocess.run(
            _cli("exposure", "keygen", "--institution", inst, "--out", str(tmp_path / inst),
                 "--url", f"http://127.0.0.1:{ports[inst]}"),
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        registry["institutions"].update(json.loads(out.stdout))
        (tmp_path / inst / "ledger.json").write_text(json.dumps(LEDGERS[inst]))
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    subprocess.run(
        _cli("exposure", "registry-sign", "--registry", str(tmp_path / "registry.json"),
             "--trust", str(trust), "--coordinator-key",
             str(tmp_path / "run" / "keys" / "coordinator.key"), "--out", str(tmp_path / "reg")),
        check=True,
    )  # fmt: skip
    procs = {
        inst: subprocess.Popen(
            _cli(
                "exposure",
                "serve",
                "--institution",
                inst,
                "--key",
                str(tmp_path / inst / f"{inst}.exposure.key"),
                "--registry",
                str(tmp_path / "reg"),
                "--trust",
                str(trust),
                "--ledger",
                str(tmp_path / inst / "ledger.json"),
                "--federation-key",
                str(tmp_path / "fed.key"),
                "--port",
                str(ports[inst]),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for inst in INSTITUTIONS
    }
    try:
        for inst in INSTITUTIONS:
            _wait(f"http://127.0.0.1:{ports[inst]}/healthz", procs[inst])
        from jointcredit.service.registry import load_federation_key
        from jointcredit.trust.store import load_store

        client = ExposureClient(
            load_registry(tmp_path / "reg", load_store(trust)),
            load_federation_key(tmp_path / "fed.key"),
        )

        async def total() -> ExposureResult:
            try:
                return await client.total("TIN-1")
            finally:
                await client.close()  # as the service's shutdown does

        assert asyncio.run(total()).total_cents == 12000000 + 3050025
        procs["bank-b"].terminate()
        procs["bank-b"].wait(timeout=20)
        missing = asyncio.run(total())
        assert missing.total_cents is None and set(missing.unavailable) == {"bank-b"}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=20)


class _CookieLender(httpx.AsyncBaseTransport):
    """A lender that sets a cookie on every answer; records each request's Cookie header."""

    def __init__(self) -> None:
        self.cookies_sent: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.cookies_sent.append(request.headers.get("cookie"))
        return httpx.Response(503, headers={"Set-Cookie": "track=applicant-1; Path=/"})


def test_the_shared_client_keeps_no_cookie_and_ignores_the_environment(
    tmp_path: Path, counted: type[_Counted]
) -> None:
    """A cookie one lender sets is never sent back (not to it for the next applicant, not to
    another lender of the parent domain); proxies and .netrc from the environment are off;
    the pool holds a connection per lender for every total in flight."""
    fed_key = bytes.fromhex(new_federation_key())
    registry = _registry(_keys(), {i: f"http://{i}.test" for i in INSTITUTIONS})
    lender = _CookieLender()
    exposure = ExposureClient(registry, fed_key, transport=lender)

    async def run() -> None:
        for applicant in ("TIN-1", "TIN-2"):
            await exposure.total(applicant)
        await exposure.close()

    asyncio.run(run())
    assert len(lender.cookies_sent) == 2 * len(INSTITUTIONS)
    assert lender.cookies_sent == [None] * len(lender.cookies_sent)
    (client,) = counted.made
    assert client.trust_env is False
    assert not list(client.cookies.jar)


def test_the_pool_is_sized_for_every_lender_of_every_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[dict[str, Any]] = []
    real = httpx.AsyncClient

    def record(**kwargs: Any) -> httpx.AsyncClient:
        made.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", record)
    fed_key = bytes.fromhex(new_federation_key())
    registry = _registry(_keys(), {i: f"http://{i}.test" for i in INSTITUTIONS})
    exposure = ExposureClient(registry, fed_key, transport=_CookieLender())

    async def run() -> None:
        await exposure.total("TIN-1")
        await exposure.close()

    asyncio.run(run())
    pool = TOTALS_AT_ONCE * len(INSTITUTIONS)
    assert made[0]["limits"] == httpx.Limits(max_connections=pool, max_keepalive_connections=pool)


@pytest.mark.integration
def test_the_exposure_client_is_closed_even_when_the_writer_close_raises(
    tmp_path: Path, counted: type[_Counted], monkeypatch: pytest.MonkeyPatch
) -> None:
    fed_key = bytes.fromhex(new_federation_key())
    registry, transport = _institutions(tmp_path, fed_key)
    token = new_key(tmp_path / "api.json", "bank-a")
    service = load_service(signed_artifact(tmp_path / "run"), tmp_path / "run" / "trust.json",
                           api_keys=tmp_path / "api.json",
                           db_url=f"sqlite:///{tmp_path / 'a.sqlite'}")  # fmt: skip
    service.exposure = ExposureClient(registry, fed_key, transport=transport)
    ConsentRegistry(service.audit).add("bank-a", "c-TIN-1", "TIN-1", "exposure")
    audit_closed: list[bool] = []
    real_audit_close = service.audit.close
    monkeypatch.setattr(
        service.audit, "close", lambda: (audit_closed.append(True), real_audit_close())[1]
    )

    async def broken(self: AuditWriter) -> None:
        raise RuntimeError("writer close failed")

    monkeypatch.setattr(AuditWriter, "close", broken)
    app = create_app(service)
    with pytest.raises(RuntimeError, match="writer close failed"), TestClient(app) as client:
        r = _request(client, token, "TIN-1", ["bank-a", "cf-c"])
        assert r.json()["joint_credit"]["existing_exposure"] is not None, r.text
    assert counted.made and counted.closed == counted.made
    assert audit_closed == [True]
