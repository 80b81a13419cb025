"""Joint credit limits with cross-institution exposure learned by a secure sum: the masking
protocol itself, then three institution endpoints and the service as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import free_port, signed_artifact

from jointcredit.service.auth import new_key
from jointcredit.service.exposure import (
    MODULUS,
    ExposureError,
    Institution,
    Ledger,
    ShareRequest,
    pseudonym,
    total_from_shares,
)
from jointcredit.service.joint import JointPolicy, JointRequest, joint_limit
from jointcredit.service.registry import Registry, RegistryEntry, new_federation_key, public_b64

INSTITUTIONS = ["bank-a", "bank-b", "cf-c"]
LEDGERS = {
    "bank-a": {"TIN-1": 120000.0, "TIN-2": 5000.0},
    "bank-b": {"TIN-1": 30500.25},
    "cf-c": {"TIN-3": 999.0},
}

pytestmark = pytest.mark.e2e


def _keys(tmp: Path) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return {i: X25519PrivateKey.generate() for i in INSTITUTIONS}


def _registry(keys: dict[str, Any], ports: dict[str, int] | None = None) -> Registry:
    return Registry(
        federation="test",
        institutions={
            i: RegistryEntry(
                url=f"http://127.0.0.1:{(ports or {}).get(i, 1)}",
                x25519_public=public_b64(k.public_key()),
            )
            for i, k in keys.items()
        },
    )


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
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

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
    from jointcredit.service.exposure import mask, masked_share, pairwise_key

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


def test_joint_limit_rule() -> None:
    policy = JointPolicy()
    request = JointRequest(
        applicant_id="x", annual_income=120000, monthly_debt_payments=1000,
        participating_lenders=["bank-a", "bank-b", "cf-c"],
    )  # fmt: skip
    out = joint_limit(request, pd=0.06, exposure_cents=2_000_000, declined=False, policy=policy)
    # 40 % of 10,000 a month minus 1,000 = 3,000 a month for 60 months at 9 %.
    assert out.capacity == pytest.approx(144_520.82, abs=1)
    assert out.total_limit == pytest.approx(out.capacity * 0.8, abs=0.01)
    assert out.available == pytest.approx(out.total_limit - 20_000, abs=0.01)
    assert set(out.allocations.values()) == {out.available // 3 // 100 * 100}
    declined = joint_limit(request, pd=0.06, exposure_cents=0, declined=True, policy=policy)
    assert declined.available == 0 and set(declined.allocations.values()) == {0.0}
    unknown = joint_limit(request, pd=0.06, exposure_cents=None, declined=False, policy=policy)
    assert unknown.existing_exposure is None and unknown.available == 0


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


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("exposure")
    subprocess.run(_cli("exposure", "federation-key", "--out", str(root / "fed.key")), check=True)
    ports = {i: free_port() for i in INSTITUTIONS}
    registry: dict[str, Any] = {"federation": "test", "institutions": {}}
    for inst in INSTITUTIONS:
        out = subprocess.run(
            _cli("exposure", "keygen", "--institution", inst, "--out", str(root / inst),
                 "--url", f"http://127.0.0.1:{ports[inst]}"),
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        registry["institutions"].update(json.loads(out.stdout))
        (root / inst / "ledger.json").write_text(json.dumps(LEDGERS[inst]))
    (root / "registry.json").write_text(json.dumps({**registry, "federation": "svc"}))
    model_dir = signed_artifact(root / "run")  # its trust store is the federation's ("svc")
    trust = root / "run" / "trust.json"
    subprocess.run(
        _cli("exposure", "registry-sign", "--registry", str(root / "registry.json"),
             "--trust", str(trust), "--coordinator-key", str(root / "run" / "keys" /
             "coordinator.key"), "--out", str(root / "registry")),
        check=True,
    )  # fmt: skip
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for inst in INSTITUTIONS:
            procs[inst] = subprocess.Popen(
                _cli("exposure", "serve", "--institution", inst,
                     "--key", str(root / inst / f"{inst}.exposure.key"),
                     "--registry", str(root / "registry"), "--trust", str(trust),
                     "--ledger", str(root / inst / "ledger.json"),
                     "--federation-key", str(root / "fed.key"), "--port", str(ports[inst])),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        token = new_key(root / "api.json", "bank-a")
        port = free_port()
        procs["service"] = subprocess.Popen(
            _cli("serve", "--model", str(model_dir), "--trust", str(root / "run" / "trust.json"),
                 "--api-keys", str(root / "api.json"), "--db", f"sqlite:///{root / 'a.sqlite'}",
                 "--exposure-registry", str(root / "registry"),
                 "--federation-key", str(root / "fed.key"), "--port", str(port)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for inst in INSTITUTIONS:
            _wait(f"http://127.0.0.1:{ports[inst]}/healthz", procs[inst])
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/healthz", procs["service"])
        yield {"base": base, "token": token, "procs": procs, "ports": ports,
               "federation_key": root / "fed.key"}  # fmt: skip
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=20)


def _request(base: str, token: str, applicant_id: str) -> dict[str, Any]:
    spec = httpx.get(f"{base}/openapi.json").json()
    body = spec["components"]["schemas"]["DecisionRequest"]["examples"][0]
    body["joint"] = {
        "applicant_id": applicant_id, "annual_income": 600000, "monthly_debt_payments": 2000,
        "participating_lenders": ["bank-a", "cf-c"],
    }  # fmt: skip
    r = httpx.post(
        f"{base}/v1/decisions", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def test_joint_limit_subtracts_the_secure_sum_of_exposure(federation: dict[str, Any]) -> None:
    d = _request(federation["base"], federation["token"], "TIN-1")
    joint = d["joint_credit"]
    assert joint["existing_exposure"] == pytest.approx(150500.25)
    assert joint["available"] == pytest.approx(max(0.0, joint["total_limit"] - 150500.25), abs=0.01)
    assert set(joint["allocations"]) == {"bank-a", "cf-c"}
    fresh = _request(federation["base"], federation["token"], "TIN-404")["joint_credit"]
    assert fresh["existing_exposure"] == 0.0


def test_only_holders_of_the_federation_key_may_ask_for_a_share(
    federation: dict[str, Any],
) -> None:
    from jointcredit.service.exposure import ISSUED_HEADER, MAC_HEADER, request_key, request_mac
    from jointcredit.service.registry import load_federation_key

    url = f"http://127.0.0.1:{federation['ports']['bank-a']}/v1/exposure/share"
    key = request_key(load_federation_key(federation["federation_key"]))
    body = json.dumps({"query_id": "ab" * 16, "pseudonym": "0" * 64,
                       "participants": sorted(INSTITUTIONS)}).encode()  # fmt: skip
    now = int(time.time())

    def post(mac: str, issued: int, content: bytes = body) -> httpx.Response:
        headers = {MAC_HEADER: mac, ISSUED_HEADER: str(issued), "Content-Type": "application/json"}
        return httpx.post(url, content=content, headers=headers, timeout=10)

    assert httpx.post(url, content=body, timeout=10).status_code == 401  # unsigned
    assert post(request_mac(b"x" * 32, now, body), now).status_code == 401  # another key
    altered = body.replace(b'"0000', b'"1111', 1)
    assert post(request_mac(key, now, body), now, altered).status_code == 401  # body changed
    old = now - 3600
    assert post(request_mac(key, old, body), old).status_code == 401  # stale
    ok = post(request_mac(key, now, body), now)  # none of the refused ones used the query id
    assert ok.status_code == 200, ok.text
    assert post(request_mac(key, now, body), now).status_code == 409  # replay: already answered


def test_one_institution_down_gives_refer_not_a_wrong_number(federation: dict[str, Any]) -> None:
    down = federation["procs"]["bank-b"]
    down.terminate()
    down.wait(timeout=20)
    d = _request(federation["base"], federation["token"], "TIN-1")
    assert d["decision"] in {"refer", "decline"}
    flags = {f["code"]: f for f in d["policy_flags"]}
    assert "bank-b" in flags["EXPOSURE_UNAVAILABLE"]["text"]
    if d["decision"] == "refer":
        assert d["reasons"][0]["code"] == "EXPOSURE_UNAVAILABLE"
    assert d["joint_credit"]["existing_exposure"] is None
    assert d["joint_credit"]["available"] == 0


def test_signed_registry_verifies_and_a_swapped_key_is_refused(tmp_path: Path) -> None:
    from jointcredit.service.registry import load_registry, sign_registry
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
