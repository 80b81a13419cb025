"""kill -9 durability trials for `scripts/attack.py`: clients send decisions (single, batches of
rows, batches of columns) to `jointcredit serve` while it is SIGKILLed at a random moment; every
decision a client received a 2xx for (acknowledged) must be in the audit log after a restart,
with the outcome the client was told, and `audit verify` (with the service's anchors) must
pass.

Three setups, as in issue 19: one worker; `--workers 2`; two `serve` processes on one SQLite
file. Each setup keeps one database over its trials, so crashes accumulate."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from attack_serve import Model, Server, client

from jointcredit.service.audit import AuditLog
from jointcredit.service.records import Responses

# name: (serve processes on the one database, workers each)
SETUPS = {"one-worker": (1, 1), "two-workers": (1, 2), "two-processes": (2, 1)}
CLIENTS = 6

Ack = tuple[str, str]  # (decision id, decision) of a 2xx answer


@dataclass
class Trial:
    setup: str
    killed_after_s: float
    acknowledged: int  # in this setup so far (its database is kept over its trials)
    new: int  # acknowledged in this trial
    logged: int
    lost: list[str]  # acknowledged, not in the log
    other_outcome: list[str]  # in the log with another outcome than the client was told
    client_errors: dict[str, int]
    verify_ok: bool
    verify_output: str
    decides_after_restart: bool


@dataclass
class _Load:
    """Client threads sending valid decisions until told to stop or the servers are gone."""

    bases: list[str]
    token: str
    examples: dict[str, Any]
    seed: int
    acked: list[Ack] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, n: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in range(n)]
        for t in threads:
            t.start()
        return threads

    def _client(self, k: int) -> None:
        rng = random.Random(self.seed * 100 + k)
        headers = {"Authorization": f"Bearer {self.token}"}
        with client(self.bases[k % len(self.bases)], timeout=30) as http:
            while not self.stop.is_set():
                path, body = self._request(rng)
                try:
                    r = http.post(path, json=body, headers=headers)
                except httpx.TransportError as exc:
                    self._count(type(exc).__name__)
                    time.sleep(0.05)  # the server is gone (killed): until told to stop
                    continue
                if r.status_code // 100 != 2:
                    self._count(str(r.status_code))
                    continue
                acks = _acks(path, r.json())
                with self._lock:
                    self.acked.extend(acks)

    def _request(self, rng: random.Random) -> tuple[str, Any]:
        single = self.examples["single"]
        roll = rng.random()
        if roll < 0.7:
            return "/v1/decisions", {**single, "reference": f"k{rng.getrandbits(40)}"}
        if roll < 0.85:
            return "/v1/decisions:batch", {"applications": [single] * rng.randint(2, 20)}
        columns = self.examples["columns"]
        rows = rng.randint(2, 50)
        return "/v1/decisions:columnar", {
            "columns": {f: (v * (rows // len(v) + 1))[:rows] for f, v in columns.items()}
        }

    def acknowledged(self) -> list[Ack]:
        with self._lock:
            return list(self.acked)

    def _count(self, what: str) -> None:
        with self._lock:
            self.errors[what] = self.errors.get(what, 0) + 1


def _acks(path: str, body: Any) -> list[Ack]:
    if path == "/v1/decisions":
        return [(body["decision_id"], body["decision"])]
    if path == "/v1/decisions:batch":
        return [(d["decision_id"], d["decision"]) for d in body["decisions"]]
    columns = body["decisions"]
    return list(zip(columns["decision_id"], columns["decision"], strict=True))


def check_logged(db: Path, acked: list[Ack]) -> tuple[int, list[str], list[str]]:
    """How many acknowledged decisions the log holds with the outcome the client was told,
    the ids it lacks, and those it holds with another outcome. Read as the service reads them:
    a view row, or a columnar batch's chained record (those decisions have no view row)."""
    log = AuditLog(f"sqlite:///{db}", create=False)
    responses = Responses(log)
    held, lost, differ = 0, [], []
    try:
        for decision_id, decision in acked:
            row = log.get(decision_id)
            if row is not None:
                found: str | None = row.decision
            else:
                in_batch = responses.in_batch(decision_id)
                found = None if in_batch is None else in_batch[1]["decision"]
            if found is None:
                lost.append(decision_id)
            elif found != decision:
                differ.append(decision_id)
            else:
                held += 1
    finally:
        log.close()
    return held, lost, differ


def audit_verify(server: Server) -> tuple[bool, str]:
    """`jointcredit audit verify` of the server's database against its anchors."""
    cmd = [sys.executable, "-m", "jointcredit.cli", "audit", "verify",
           "--db", f"sqlite:///{server.db}", "--anchors", str(server.anchors),
           "--anchor-public-key", f"{server.anchor_key}.pub"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return done.returncode == 0, (done.stdout + done.stderr).strip()[-500:]


def examples(base: str) -> dict[str, Any]:
    """The valid requests the service's OpenAPI shows (single and columnar)."""
    with client(base) as http:
        schemas = http.get("/openapi.json").json()["components"]["schemas"]
    return {"single": schemas["DecisionRequest"]["examples"][0],
            "columns": schemas["ColumnarDecisionRequest"]["examples"][0]["columns"]}  # fmt: skip


def trial(
    setup: str, model: Model, token: str, workdir: Path, acked_before: list[Ack],
    rng: random.Random,
) -> tuple[Trial, list[Ack]]:  # fmt: skip
    """One trial of `setup` on the database in `workdir`; returns it and every decision
    acknowledged in this setup so far."""
    processes, workers = SETUPS[setup]
    db, log = workdir / "decisions.sqlite", workdir / "serve.log"
    servers = [Server(model, db, log, workers=workers) for _ in range(processes)]
    load = _Load([s.base for s in servers], token, {}, rng.getrandbits(32))
    wait = rng.uniform(0.5, 4.0)
    try:
        for s in servers:  # one after another: the first creates the anchor key they share
            s.start().wait_ready()
        load.examples = examples(servers[0].base)
        threads = load.run(CLIENTS)
        time.sleep(wait)
        for s in servers:  # as close to together as two signals go
            s.kill()
        time.sleep(0.5)  # let the clients see the connections go
        load.stop.set()
        for t in threads:
            t.join(timeout=60)
    finally:
        for s in servers:
            s.kill()
    new = load.acknowledged()
    acked = acked_before + new
    # Restart on the same database: it must come up, hold every acknowledged decision, and
    # keep deciding.
    again = Server(model, db, log).start()
    try:
        again.wait_ready()
        with client(again.base) as http:
            r = http.post("/v1/decisions", json=load.examples["single"],
                          headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        decides = r.status_code == 200
        if decides:
            new.append((r.json()["decision_id"], r.json()["decision"]))
            acked.append(new[-1])
    finally:
        again.stop()
    held, lost, differ = check_logged(db, acked)
    ok, output = audit_verify(again)
    result = Trial(
        setup=setup, killed_after_s=round(wait, 2), acknowledged=len(acked), new=len(new),
        logged=held, lost=lost, other_outcome=differ, client_errors=dict(load.errors),
        verify_ok=ok, verify_output=output, decides_after_restart=decides,
    )  # fmt: skip
    return result, acked


def run_trials(
    model: Model, token: str, workdir: Path, trials: int, deadline: float,
    setups: list[str], seed: int = 19,
) -> list[Trial]:  # fmt: skip
    """`trials` trials of each of `setups` in turn, as many as fit before `deadline`."""
    rng = random.Random(seed)
    acked: dict[str, list[Ack]] = {name: [] for name in setups}
    out: list[Trial] = []
    for k in range(trials):
        for setup in setups:
            if time.monotonic() > deadline:
                return out
            d = workdir / setup
            d.mkdir(parents=True, exist_ok=True)
            result, acked[setup] = trial(setup, model, token, d, acked[setup], rng)
            print(f"  kill trial {k + 1} {setup}: killed after {result.killed_after_s} s, "
                  f"{result.acknowledged} acknowledged so far, {len(result.lost)} lost, "
                  f"audit verify {'OK' if result.verify_ok else 'FAILED'}", flush=True)  # fmt: skip
            out.append(result)
    return out
