"""Attack: the exposure endpoint (issue 19, item 11). A non-ASCII or 5,000-digit
`X-Jointcredit-Issued-At` gave an unauthenticated 500, and a 300 MB body was read whole before
the MAC was checked. The headers are now checked before the body is read (401), a declared
length over the bound is refused unread (413), and a chunked body is cut off at the bound."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi import FastAPI

from jointcredit.service.exposure import (
    ISSUED_HEADER,
    MAC_HEADER,
    MAX_SHARE_BODY,
    Institution,
    Ledger,
    request_key,
    request_mac,
)
from jointcredit.service.exposure_http import institution_app
from jointcredit.service.registry import Registry, RegistryEntry, public_b64

pytestmark = pytest.mark.integration

FED_KEY = b"k" * 32
BODY = json.dumps(
    {"query_id": "ab" * 16, "pseudonym": "0" * 64, "participants": ["bank-a", "bank-b", "cf-c"]}
).encode()


def _app() -> FastAPI:
    keys = {i: X25519PrivateKey.generate() for i in ("bank-a", "bank-b", "cf-c")}
    registry = Registry(
        federation="test",
        institutions={
            i: RegistryEntry(url="http://127.0.0.1:1", x25519_public=public_b64(k.public_key()))
            for i, k in keys.items()
        },
    )
    return institution_app(Institution("bank-a", keys["bank-a"], registry, Ledger({})), FED_KEY)


def _post(headers: dict[str, bytes | str], content: bytes | AsyncIterator[bytes]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://bank-a") as client:
            return await client.post("/v1/exposure/share", content=content, headers=headers)

    return asyncio.run(go())


@pytest.mark.parametrize("issued", [b"\xb2", "9" * 5000, "\u0663".encode("latin-1", "replace")])
def test_malformed_issue_times_are_401_not_500(issued: bytes | str) -> None:
    r = _post({MAC_HEADER: "0" * 64, ISSUED_HEADER: issued}, BODY)
    assert r.status_code == 401, r.text


def test_a_valid_request_is_still_answered() -> None:
    now = int(time.time())
    mac = request_mac(request_key(FED_KEY), now, BODY)
    r = _post({MAC_HEADER: mac, ISSUED_HEADER: str(now), "Content-Type": "application/json"}, BODY)
    assert r.status_code == 200, r.text


def test_headers_are_checked_before_the_body_is_read() -> None:
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(64):
            read += 1
            yield b" " * 1024

    r = _post({MAC_HEADER: "0" * 64, ISSUED_HEADER: "1"}, body())  # stale: 1970
    assert r.status_code == 401
    assert read <= 1  # httpx may have the first chunk in hand; the app asked for none


def test_a_declared_300_mb_body_is_refused_unread() -> None:
    now = str(int(time.time()))
    headers = {MAC_HEADER: "0" * 64, ISSUED_HEADER: now, "Content-Length": str(300 * 2**20)}
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(300):
            read += 1
            yield b" " * 2**20

    assert _post(headers, body()).status_code == 413
    assert read <= 1


def test_a_chunked_body_is_cut_off_at_the_bound() -> None:
    now = str(int(time.time()))
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(300):
            read += 1
            yield b" " * 2**16

    r = _post({MAC_HEADER: "0" * 64, ISSUED_HEADER: now}, body())
    assert r.status_code == 413
    assert read * 2**16 <= MAX_SHARE_BODY + 2 * 2**16  # stopped at the bound, not 18 MiB later
