"""A vertical applicant decided over HTTP with the platform as its own process: `jointcredit
vertical serve` (mutual TLS with the federation's certificates) and `jointcredit serve` of
the vertical model at the bank, both on loopback; once the platform process is killed, the
same applicant is referred with a reason naming the platform."""

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
from service_helpers import announced, free_port
from typer.testing import CliRunner
from vertical_helpers import Federation, vertical_federation

from jointcredit.cli.main import app
from jointcredit.service.auth import new_key

pytestmark = pytest.mark.e2e


def _started(
    args: list[str], marker: str, seconds: float = 90
) -> tuple[subprocess.Popen[str], str]:
    """`jointcredit ARGS --port 0 --host 127.0.0.1`: the process and the URL it announces."""
    proc, url = announced(args, marker, seconds)
    if url is None:
        raise AssertionError(
            f"{args[:2]} never said where it listens: {proc.stderr and proc.stderr.read()}"
        )
    return proc, url


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return vertical_federation(tmp_path_factory.mktemp("vfed-e2e"), trees=2)


@pytest.fixture
def platform(fed: Federation) -> Iterator[tuple[subprocess.Popen[str], str]]:
    db = f"sqlite:///{fed.root / 'platform-e2e.sqlite'}"
    proc, url = _started(
        ["vertical", "serve", "--kit", str(fed.kit("platform")), "--model", str(fed.model),
         "--data", str(fed.platform_data), "--schema", str(fed.schema), "--db", db],
        "answering vertical queries on ",
    )  # fmt: skip
    # The consent registered while it serves, as docs/VERTICAL.md says: read per query.
    applicant = fed.applicant(fed.known(1)[0])[0]
    added = CliRunner().invoke(app, [
        "consent", "add", "--db", db, "--institution", "bank", "--applicant-ref", applicant,
        "--id", "c-e2e", "--purpose", "vertical",
    ])  # fmt: skip
    assert added.exit_code == 0, added.output
    yield proc, url
    _stop(proc)


def test_the_service_decides_over_http_and_refers_once_the_platform_is_killed(
    fed: Federation, platform: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    platform_proc, platform_url = platform
    assert platform_url.startswith("https://127.0.0.1:")
    keys_file = tmp_path / "keys.json"
    token = new_key(keys_file, "bank")
    bank, base = _started(
        ["serve", "--model", str(fed.model), "--trust", str(fed.trust),
         "--vertical-kit", str(fed.kit("bank")), "--party", f"platform={platform_url}",
         "--api-keys", str(keys_file), "--db", f"sqlite:///{tmp_path / 'bank.sqlite'}",
         "--party-timeout", "1.0"],
        "listening on ",
    )  # fmt: skip
    try:
        applicant_id, features = fed.applicant(fed.known(1)[0])
        body = {"applicant": features,
                "vertical": {"applicant_id": applicant_id, "consent_id": "c-e2e"}}  # fmt: skip
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{base}/v1/decisions", json=body, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()
        assert isinstance(got["probability_of_default"], float), got["reasons"]
        # Without a certificate of the federation the platform does not even talk.
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{platform_url}/v1/vertical/sides", content=b"{}", verify=False)

        platform_proc.kill()
        platform_proc.wait(10)
        r = httpx.post(f"{base}/v1/decisions", json=body, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["decision"] == "refer" and got["probability_of_default"] is None
        first = got["reasons"][0]
        assert first["code"] == "VERTICAL_PARTY_UNAVAILABLE" and "platform" in first["text"]
    finally:
        _stop(bank)


def test_a_joint_limit_notice_and_batch_over_http_with_the_lenders_as_processes(
    fed: Federation, tmp_path: Path
) -> None:
    """The vertical bank's `serve --exposure-registry --federation-key`, three `exposure
    serve` processes over their ledgers (keys and the registry made and signed by the CLI with
    the federation's coordinator key), the platform's `vertical serve`: an approved or
    referred applicant's joint limit subtracts the lenders' secure sum; its notice and a batch
    answer over HTTP."""
    lenders = ["bank", "lender-b", "lender-c"]
    applicant_id, features = fed.applicant(fed.known(1)[0])
    ledgers = {"bank": {"TIN-1": 1000.0}, "lender-b": {"TIN-1": 2500.5}, "lender-c": {}}
    ports = {i: free_port() for i in lenders}
    run = CliRunner()
    trust = json.loads(fed.trust.read_bytes())
    registry: dict[str, Any] = {"federation": trust["federation"], "institutions": {}}
    fed_key = tmp_path / "fed.key"
    assert run.invoke(app, ["exposure", "federation-key", "--out", str(fed_key)]).exit_code == 0
    for inst in lenders:
        url = f"http://127.0.0.1:{ports[inst]}"
        made = run.invoke(app, ["exposure", "keygen", "--institution", inst, "--out",
                                str(tmp_path / inst), "--url", url])  # fmt: skip
        assert made.exit_code == 0, made.output
        registry["institutions"].update(json.loads(made.stdout))
        (tmp_path / inst / "ledger.json").write_text(json.dumps(ledgers[inst]))
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    signed = run.invoke(app, [
        "exposure", "registry-sign", "--registry", str(tmp_path / "registry.json"), "--trust",
        str(fed.trust), "--coordinator-key", str(fed.kits / "coordinator" / "coordinator.key"),
        "--out", str(tmp_path / "reg"),
    ])  # fmt: skip
    assert signed.exit_code == 0, signed.output
    pdb = f"sqlite:///{tmp_path / 'platform.sqlite'}"
    bdb = f"sqlite:///{tmp_path / 'bank.sqlite'}"
    procs: list[subprocess.Popen[str]] = []
    try:
        for inst in lenders:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jointcredit.cli", "exposure", "serve", "--institution",
                 inst, "--key", str(tmp_path / inst / f"{inst}.exposure.key"), "--registry",
                 str(tmp_path / "reg"), "--trust", str(fed.trust), "--ledger",
                 str(tmp_path / inst / "ledger.json"), "--federation-key", str(fed_key),
                 "--port", str(ports[inst])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            procs.append(proc)
        platform, platform_url = _started(
            ["vertical", "serve", "--kit", str(fed.kit("platform")), "--model", str(fed.model),
             "--data", str(fed.platform_data), "--schema", str(fed.schema), "--db", pdb],
            "answering vertical queries on ",
        )  # fmt: skip
        procs.append(platform)
        keys_file = tmp_path / "keys.json"
        token = new_key(keys_file, "bank")
        bank, base = _started(
            ["serve", "--model", str(fed.model), "--trust", str(fed.trust),
             "--vertical-kit", str(fed.kit("bank")), "--party", f"platform={platform_url}",
             "--api-keys", str(keys_file), "--db", bdb, "--party-timeout", "2.0",
             "--exposure-registry", str(tmp_path / "reg"), "--federation-key", str(fed_key)],
            "listening on ",
        )  # fmt: skip
        procs.append(bank)
        # Registered while both serve (each database is made at its service's start).
        for db, purpose, ref, cid in ((pdb, "vertical", applicant_id, "c-v"),
                                      (bdb, "exposure", "TIN-1", "c-x")):  # fmt: skip
            added = run.invoke(app, ["consent", "add", "--db", db, "--institution", "bank",
                                     "--applicant-ref", ref, "--id", cid,
                                     "--purpose", purpose])  # fmt: skip
            assert added.exit_code == 0, added.output
        for inst in lenders:
            _healthy(f"http://127.0.0.1:{ports[inst]}/healthz")
        body = {
            "applicant": features,
            "vertical": {"applicant_id": applicant_id, "consent_id": "c-v"},
            "joint": {"applicant_id": "TIN-1", "annual_income": 600000,
                      "monthly_debt_payments": 2000, "participating_lenders": ["bank", "lender-b"],
                      "consent_id": "c-x"},
        }  # fmt: skip
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{base}/v1/decisions", json=body, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()
        assert isinstance(got["probability_of_default"], float), got["reasons"]
        joint = got["joint_credit"]
        assert joint["existing_exposure"] == pytest.approx(3500.5) and joint["total_limit"] > 0
        notice = httpx.get(f"{base}/v1/decisions/{got['decision_id']}/notice?lang=zh",
                           headers=auth, timeout=30)  # fmt: skip
        assert notice.status_code == (409 if got["status"] == "decided" else 200), notice.text
        batch = httpx.post(f"{base}/v1/decisions:batch", json={"applications": [body, body]},
                           headers=auth, timeout=30)  # fmt: skip
        assert batch.status_code == 200, batch.text
        assert [d["joint_credit"]["existing_exposure"] for d in batch.json()["decisions"]] == [
            pytest.approx(3500.5), pytest.approx(3500.5)]  # fmt: skip
    finally:
        for proc in procs:
            _stop(proc)


def _healthy(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")
