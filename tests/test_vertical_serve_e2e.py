"""A vertical applicant decided over HTTP with the platform as its own process: `jointcredit
vertical serve` (mutual TLS with the federation's certificates) and `jointcredit serve` of
the vertical model at the bank, both on loopback; once the platform process is killed, the
same applicant is referred with a reason naming the platform."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import announced
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
    return vertical_federation(tmp_path_factory.mktemp("vfed-e2e"), trees=6)


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
