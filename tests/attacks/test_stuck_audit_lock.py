"""Attack: a stuck audit lock (issue 19, item 13). While another process held the audit log's
lock every decision hung, and `/healthz` and `/readyz` said 200. Now an append waits at most
the lock timeout and the decision fails with 503 and Retry-After (nothing written), `/readyz`
is 503 while the lock is held, and both recover when it is released."""

from __future__ import annotations

import fcntl
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import signed_artifact

from jointcredit.service.app import create_app
from jointcredit.service.auth import new_key
from jointcredit.service.loader import load_service

pytestmark = pytest.mark.integration

LOCK_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("locked")
    key = new_key(root / "keys.json", "bank-a")
    db = root / "audit.sqlite"
    service = load_service(signed_artifact(root), root / "trust.json", api_keys=root / "keys.json",
                           db_url=f"sqlite:///{db}", audit_lock_timeout=LOCK_TIMEOUT)  # fmt: skip
    with TestClient(create_app(service)) as client:
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        example = schemas["DecisionRequest"]["examples"][0]

        def decide() -> Any:
            return client.post("/v1/decisions", json=example,
                               headers={"Authorization": f"Bearer {key}"})  # fmt: skip

        assert decide().status_code == 200  # the log exists and works
        yield {"client": client, "decide": decide, "db": db}


def _held_by_another_process(path: Path, how: str) -> subprocess.Popen[str]:
    """A process holding the database's write lock (`sqlite`: BEGIN IMMEDIATE, as any SQLite
    client can) or the service's lock file (`flock`: as a stuck service worker would)."""
    wait = "print('held', flush=True); sys.stdin.read()"
    if how == "sqlite":
        code = (f"import sqlite3, sys; c = sqlite3.connect({str(path)!r}, isolation_level=None);"
                f"c.execute('BEGIN IMMEDIATE'); {wait}")  # fmt: skip
    else:
        code = (f"import fcntl, sys; f = open({str(path) + '.lock'!r}, 'ab');"
                f"fcntl.flock(f, fcntl.LOCK_EX); {wait}")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    return call(), time.monotonic() - start


@pytest.mark.parametrize("how", ["flock", "sqlite"])
def test_a_held_lock_gives_503_fast_and_readyz_not_ready_then_both_recover(
    served: dict[str, Any], how: str
) -> None:
    client, decide = served["client"], served["decide"]
    rows = sqlite3.connect(served["db"]).execute("SELECT count(*) FROM audit_log").fetchone()[0]
    holder = _held_by_another_process(served["db"], how)
    try:
        r, took = _timed(decide)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"].isdigit()
        assert "audit log" in r.json()["detail"]
        assert took < LOCK_TIMEOUT + 10  # bounded (the old code waited for ever); generous
        ready, took = _timed(lambda: client.get("/readyz"))
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
        assert took < 10
        assert client.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        holder.communicate("", timeout=30)  # releases the lock
    assert client.get("/readyz").status_code == 200
    assert decide().status_code == 200
    con = sqlite3.connect(served["db"])
    assert con.execute("SELECT count(*) FROM audit_log").fetchone()[0] == rows + 1  # no 503 logged
    con.close()


def test_a_lock_held_briefly_is_waited_for(served: dict[str, Any]) -> None:
    """A writer holding the lock for less than the timeout (another worker's commit) delays
    a decision, it does not fail it."""
    lock = open(str(served["db"]) + ".lock", "ab")  # noqa: SIM115 (released below)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        threading.Timer(0.3, lambda: fcntl.flock(lock, fcntl.LOCK_UN)).start()
        assert served["decide"]().status_code == 200
    finally:
        time.sleep(0.4)
        lock.close()
