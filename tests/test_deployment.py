"""A real multi-process federation: provisioned kits, one SuperLink and three institutions'
SuperNodes on 127.0.0.1 with TLS and node authentication, each node with its own data file, a
training run through `flwr run`, its real final status, the signed artifact verified and used
to score. The nodes run as institutions run them, `jointcredit node start` (the SuperNode and
its long-lived ClientApp worker). In the same run a fourth, registered node signs with a key
the trust store does not hold: its replies are rejected and the run goes on. Plus the
refusals: an unregistered node, a node trusting another CA, plain HTTP.

Every process started here is stopped (SIGTERM, then SIGKILL) also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jointcredit.deploy import kits, node, pki, processes
from jointcredit.trust import keys
from jointcredit.trust.store import load_store

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sba_sample"
SCHEMA = SAMPLE / "schema.toml"
# Three of the shipped lenders play three institutions, each with only its own file.
LENDERS = {
    "bank-a": "banco-popular-north-america",
    "bank-b": "bank-of-america-natl-assoc",
    "cf-c": "bbcn-bank",
}
ROGUE = "rogue-d"  # registered node, unknown update-signing key
ROGUE_DATA = "branch-bk-tr-co"
pytestmark = pytest.mark.e2e


def _run_log(federation: Federation, run_id: int) -> str:
    return (federation.flwr_home / f"run-{run_id}.log").read_text()[-4000:]


@dataclass
class Processes:
    """Every process a test starts, stopped at the end whatever happened."""

    logs: Path
    env: dict[str, str]
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self, grace: float = 15) -> None:
        for _, proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in self.started:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@dataclass
class Federation:
    root: Path
    kits: kits.Provisioned
    port: int
    flwr_home: Path
    procs: Processes

    def node_start(self, inst: str, kit: Path | None = None) -> list[str]:
        """`jointcredit node start` for this institution (SuperNode + ClientApp worker)."""
        return node.node_start_command(
            kit or self.kits.kit(inst),
            SAMPLE / f"{LENDERS.get(inst, ROGUE_DATA)}.parquet",
            schema=SCHEMA,
            port=processes.free_port(),
        )

    def node(self, inst: str, port: int, kit: Path | None = None, **kw: object) -> list[str]:
        return processes.supernode_command(
            kit or self.kits.kit(inst),
            SAMPLE / f"{LENDERS.get(inst, ROGUE_DATA)}.parquet",
            schema=SCHEMA,
            port=port,
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("deploy")
    port = processes.free_port()
    first, added = ["bank-a", "bank-b", ROGUE], "cf-c"  # cf-c joins later: `provision --add`
    provisioned = kits.provision("testfed", first, f"127.0.0.1:{port}", root / "kits")
    kits.add_institution(root / "kits", added)
    flwr_home = root / "flwr-home"
    procs = Processes(root, processes.flower_env(flwr_home))
    fed = Federation(root, provisioned, port, flwr_home, procs)
    try:
        procs.start(
            "superlink",
            processes.superlink_command(provisioned.coordinator, root / "state", "127.0.0.1"),
        )
        processes.wait_listening(port)
        processes.write_connection(provisioned.coordinator, flwr_home, "fed")
        processes.register_nodes(provisioned.coordinator, flwr_home, "fed")
        yield fed
    finally:
        procs.stop_all()


def test_kits_keep_private_keys_apart(federation: Federation) -> None:
    out = federation.kits.out
    for inst in [*LENDERS, ROGUE]:
        kit = out / inst
        for secret in (kits.NODE_AUTH_KEY, kits.SIGNING_KEY):
            assert (kit / secret).stat().st_mode & 0o777 == 0o600
        own = {p.name for p in kit.iterdir()}
        assert own == {
            kits.CA_CERT, kits.FEDERATION_FILE, kits.NODE_AUTH_KEY, kits.NODE_AUTH_PUB,
            kits.NODE_FILE, kits.SIGNING_KEY, kits.TRUST_FILE,
        }  # fmt: skip
    coordinator = {p.name for p in federation.kits.coordinator.iterdir()}
    assert kits.CA_KEY not in coordinator and kits.SIGNING_KEY not in coordinator
    assert (out / kits.PROVISIONER_DIR / kits.CA_KEY).stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="not empty"):
        kits.provision("again", ["x"], "127.0.0.1:1", out)


def test_added_institution_gets_a_kit_and_everyone_the_new_trust_store(
    federation: Federation, tmp_path: Path
) -> None:
    out = federation.kits.out
    fed = kits.load_federation(out / kits.COORDINATOR_DIR)
    assert fed.institutions == ["bank-a", "bank-b", ROGUE, "cf-c"]  # the next run waits for it
    trust = (out / kits.COORDINATOR_DIR / kits.TRUST_FILE).read_bytes()
    for inst in fed.institutions:
        assert (out / inst / kits.TRUST_FILE).read_bytes() == trust
        assert kits.load_federation(out / inst) == fed
    store = load_store(out / kits.COORDINATOR_DIR / kits.TRUST_FILE)
    signing = keys.load_private_key(out / "cf-c" / kits.SIGNING_KEY)
    assert store.find(keys.key_id(signing)) is not None
    assert (out / kits.COORDINATOR_DIR / "nodes" / "cf-c.pub").read_bytes() == (
        out / "cf-c" / kits.NODE_AUTH_PUB
    ).read_bytes()
    # Nothing changes when the request is wrong.
    for bad, why in (("cf-c", "already in"), ("coordinator", "reserved"), ("Bad Id", "")):
        with pytest.raises(ValueError, match=why):
            kits.add_institution(out, bad)
    assert (out / kits.COORDINATOR_DIR / kits.TRUST_FILE).read_bytes() == trust
    with pytest.raises(ValueError, match="not a jointcredit kit"):
        kits.add_institution(tmp_path, "bank-z")


def test_three_node_tls_federation_trains_a_signed_model(federation: Federation) -> None:
    from jointcredit.models.artifact import load_artifact
    from jointcredit.trust.store import load_store

    procs = federation.procs
    for inst in LENDERS:
        procs.start(inst, federation.node_start(inst))
    rogue = federation.root / "rogue-kit"
    shutil.copytree(federation.kits.kit(ROGUE), rogue)
    (rogue / kits.SIGNING_KEY).unlink()
    keys.write_private_key(rogue / kits.SIGNING_KEY, keys.generate())  # not in the store
    procs.start(ROGUE, federation.node_start(ROGUE, kit=rogue))
    out = federation.root / "run"
    config = processes.run_config(
        federation.kits.coordinator,
        out,
        {"rounds": 1, "finetune-epochs": 1, "checkpoints": False, "schema": str(SCHEMA)},
    )
    started = time.monotonic()
    run_id, status = processes.start_run(ROOT, federation.flwr_home, "fed", config, timeout=900)
    seconds = time.monotonic() - started
    assert status == "finished:completed", _run_log(federation, run_id)
    metrics = json.loads((out / "metrics.json").read_text())
    # The three institutions trained; the rogue node was connected and authenticated, but
    # every reply it signed was rejected (query, train, evaluate, the personalisation prior's
    # query, final evaluate with the training reference's counts), and its deviation is not in
    # the prior. One round: several
    # rounds are the simulation tests' and scripts/reliability_deploy.py's job.
    assert metrics["institutions"] == sorted(LENDERS)
    assert len(metrics["rounds"]) == 1
    assert metrics["federated"]["evaluated_on"] == "institutions (weighted)"
    rejections = metrics["security"]["rejections"]
    assert {(r["institution"], r["reason"]) for r in rejections} == {(ROGUE, "unknown-key")}
    assert len(rejections) == 5
    assert "query.prior" in {r["message_type"] for r in rejections}
    # The reference came with the final evaluation: no exchange of its own.
    assert "query.reference" not in {r["message_type"] for r in rejections}
    assert metrics["personalization"] == {
        "method": "hierarchical",
        "prior_institutions": sorted(LENDERS),
        "ditto_institutions": [],
    }
    for rnd in metrics["rounds"]:
        assert rnd["train_institutions"] == sorted(LENDERS)
    trust = load_store(federation.kits.coordinator / kits.TRUST_FILE)
    model = load_artifact(out / "model", trust)
    import pandas as pd

    applicant = pd.read_parquet(SAMPLE / f"{LENDERS['bank-a']}.parquet").head(1)
    score = model.score(applicant)
    assert 350 <= float(score[0]) <= 950
    (federation.root / "timing.json").write_text(json.dumps({"run_seconds": seconds}))

    # The eligibility service serves the deployed model like a simulated one.
    import math

    from fastapi.testclient import TestClient

    from jointcredit.service.app import create_app
    from jointcredit.service.auth import new_key
    from jointcredit.service.loader import load_service

    token = new_key(federation.root / "api-keys.json", "bank-a")
    service = load_service(
        out / "model",
        federation.kits.coordinator / kits.TRUST_FILE,
        api_keys=federation.root / "api-keys.json",
        db_url=f"sqlite:///{federation.root / 'audit.sqlite'}",
    )
    values = {
        k: (None if isinstance(v, float) and math.isnan(v) else v)
        for k, v in applicant.iloc[0].to_dict().items()
        if k in model.card.data_schema.features
    }
    with TestClient(create_app(service)) as client:
        r = client.post(
            "/v1/decisions",
            json={"applicant": values, "reference": "deployed-1"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["decision"] in ("approve", "decline", "refer")


def test_unregistered_node_is_refused(federation: Federation) -> None:
    stranger = federation.root / "stranger-kit"
    kit = federation.kits.kit("bank-a")
    stranger.mkdir()
    for name in (kits.CA_CERT, kits.FEDERATION_FILE, kits.NODE_FILE, kits.SIGNING_KEY):
        (stranger / name).write_bytes((kit / name).read_bytes())
    (stranger / kits.SIGNING_KEY).chmod(0o600)
    auth = pki.node_auth_key("stranger")
    (stranger / kits.NODE_AUTH_KEY).write_bytes(auth.private_openssh)
    (stranger / kits.NODE_AUTH_KEY).chmod(0o600)
    cmd = federation.node("bank-a", processes.free_port(), kit=stranger, max_retries=1)
    proc = federation.procs.start("stranger", cmd)
    assert proc.wait(timeout=120) != 0
    assert "2004" in federation.procs.log("stranger") or "Failed to activate" in (
        federation.procs.log("stranger")
    )


def test_node_trusting_another_ca_is_refused(federation: Federation) -> None:
    other = kits.provision("otherfed", ["bank-a"], "127.0.0.1:1", federation.root / "other")
    kit = federation.root / "mixed-kit"
    kit.mkdir()
    for name in (kits.FEDERATION_FILE, kits.NODE_FILE, kits.SIGNING_KEY, kits.NODE_AUTH_KEY):
        (kit / name).write_bytes((federation.kits.kit("bank-a") / name).read_bytes())
        (kit / name).chmod(0o600)
    (kit / kits.CA_CERT).write_bytes((other.kit("bank-a") / kits.CA_CERT).read_bytes())
    proc = federation.procs.start(
        "other-ca", federation.node("bank-a", processes.free_port(), kit=kit, max_retries=1)
    )
    assert proc.wait(timeout=120) != 0


def test_plain_http_to_the_tls_port_is_refused(federation: Federation) -> None:
    import httpx

    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{federation.port}/", timeout=10)
    insecure = federation.node("bank-a", processes.free_port(), max_retries=1)
    at = insecure.index("--root-certificates")
    insecure[at : at + 2] = ["--insecure"]  # replace --root-certificates CA
    proc = federation.procs.start("insecure", insecure)
    assert proc.wait(timeout=120) != 0


def test_wrappers_always_turn_on_tls_and_node_auth(federation: Federation) -> None:
    from typer.testing import CliRunner

    from jointcredit.cli.main import app

    runner = CliRunner()
    kit = federation.kits.coordinator
    link = runner.invoke(app, ["link", "start", "--kit", str(kit), "--dry-run"])
    assert link.exit_code == 0, link.output
    for flag in ("--ssl-certfile", "--ssl-keyfile", "--ssl-ca-certfile", "--enable-supernode-auth",
                 "--disable-runtime-dependency-installation"):  # fmt: skip
        assert flag in link.output
    assert "--insecure" not in link.output
    data = SAMPLE / f"{LENDERS['bank-a']}.parquet"
    node = runner.invoke(
        app,
        ["node", "start", "--kit", str(federation.kits.kit("bank-a")), "--data", str(data),
         "--schema", str(SCHEMA), "--dry-run"],
    )  # fmt: skip
    assert node.exit_code == 0, node.output
    for flag in ("--root-certificates", "--auth-supernode-private-key", "data-file="):
        assert flag in node.output
    missing = runner.invoke(
        app, ["node", "start", "--kit", str(federation.kits.kit("bank-a")), "--data", "/nope"]
    )
    assert missing.exit_code == 2 and "data file not found" in missing.output


def test_processes_stop_cleanly_on_sigterm(federation: Federation) -> None:
    """Last: SIGTERM to the SuperLink and every node still running; each exits by itself."""
    running = [(n, p) for n, p in federation.procs.started if p.poll() is None]
    assert any(n == "superlink" for n, _ in running)
    for _, proc in running:
        os.killpg(proc.pid, signal.SIGTERM)
    for name, proc in running:
        code = proc.wait(timeout=30)
        assert code != -signal.SIGKILL, name


def test_cli_provisions_then_adds_an_institution(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jointcredit.cli.main import app

    runner = CliRunner()
    out = tmp_path / "kits"
    new = ["provision", "--federation", "f", "--institutions", "bank-a,bank-b",
           "--superlink", "127.0.0.1:9092", "--out", str(out)]  # fmt: skip
    assert runner.invoke(app, new).exit_code == 0
    added = runner.invoke(app, ["provision", "--out", str(out), "--add", "bank-c"])
    assert added.exit_code == 0, added.output
    assert "link register" in added.output and (out / "bank-c" / kits.SIGNING_KEY).exists()
    mixed = runner.invoke(app, ["provision", "--out", str(out), "--add", "x", "--federation", "g"])
    assert mixed.exit_code == 2 and "--add takes only --out" in mixed.output
    incomplete = runner.invoke(app, ["provision", "--out", str(tmp_path / "other")])
    assert incomplete.exit_code == 2 and "needs --federation, --institutions, --superlink" in (
        incomplete.output
    )
