"""Attack: slow clients (issue 19, item 13). 1,200 connections with incomplete headers stayed
open for more than 10 s and a 1 MB header was accepted. `jointcredit serve` now closes a
connection whose request headers are not complete within --header-timeout (5 s) of its first
byte, answers 431 beyond --max-header-kb (32 KiB), and 503 beyond --max-connections."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from service_helpers import free_port, signed_artifact, wait_ready

from jointcredit.service.auth import new_key

pytestmark = pytest.mark.e2e

MAX_CONNECTIONS = 50
SLOW = 300  # incomplete requests held open at once


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("slow")
    new_key(root / "keys.json", "bank-a")
    port = free_port()
    cmd = [sys.executable, "-m", "jointcredit.cli", "serve", "--model", str(signed_artifact(root)),
           "--trust", str(root / "trust.json"), "--api-keys", str(root / "keys.json"),
           "--db", f"sqlite:///{root / 'audit.sqlite'}", "--port", str(port),
           "--max-connections", str(MAX_CONNECTIONS)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    return s


def _closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.01)
    try:
        return s.recv(1 << 16) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_incomplete_headers_are_closed_within_the_header_timeout(base: str) -> None:
    slow = [_connect(base) for _ in range(SLOW)]
    for s in slow:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    drip = _connect(base)  # sends a byte now and then, never finishing its headers
    drip.sendall(b"GET /healthz HTTP/1.1\r\n")
    start = time.monotonic()
    # Beyond the connection limit, a complete request is refused rather than queued.
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 503
    open_ = set(range(SLOW))
    dripping = True
    while (open_ or dripping) and time.monotonic() - start < 30:
        open_ = {k for k in open_ if not _closed_by_server(slow[k])}
        if dripping:
            try:
                drip.sendall(b"X")
                dripping = not _closed_by_server(drip)
            except ConnectionError:
                dripping = False
        time.sleep(0.25)
    took = time.monotonic() - start
    for s in [*slow, drip]:
        s.close()
    assert not open_ and not dripping, f"{len(open_)} still open after {took:.0f} s"
    assert took < 15  # 5 s by default; generous for a loaded machine
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # recovered


def _raw(base: str, request: bytes) -> bytes:
    s = _connect(base)
    with contextlib.suppress(ConnectionError):  # closed before the server read it all
        s.sendall(request)
    answer = b""
    try:
        while chunk := s.recv(1 << 16):
            answer += chunk
    except ConnectionError:
        pass
    s.close()
    return answer


def test_oversized_headers_get_431(base: str) -> None:
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (40 * 2**10) + b"\r\n\r\n"
    assert _raw(base, big).startswith(b"HTTP/1.1 431 ")
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2**20 + b"\r\n\r\n"
    answer = _raw(base, huge)  # 431, or reset while the client was still sending
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    ok = _raw(base, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ")
