"""The Flower processes of a deployment, started from a kit: thin wrappers that always turn on
TLS and node authentication and always turn off runtime dependency installation.

`jointcredit link start` / `node start` run `flower-superlink` / `flower-supernode` from
these commands beside their long-lived app workers (`deploy/link.py`, `deploy/node.py`), and
pass a process manager's SIGTERM on to both. `link register` runs `flwr supernode register`
once per institution, and `link run` runs the app with `flwr run` and reads back the run's
real final status (`flwr run --stream` exits 0 even when the ServerApp fails).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w
from flwr.common.config import get_fused_config_from_dir
from pydantic import ValidationError

from jointcredit.deploy import supernode
from jointcredit.deploy.fab import staged_app
from jointcredit.deploy.kits import (
    CA_CERT,
    NODE_AUTH_KEY,
    SIGNING_KEY,
    SUPERLINK_CERT,
    SUPERLINK_KEY,
    load_federation,
    load_node,
)
from jointcredit.federation.protocol import NODE_OPTIONS, NodeConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.trust.keyset import COORDINATOR, TRUST_FILE

# Quiet, contained Flower processes; never a per-run `uv sync` (it would fetch a CUDA torch).
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    # How often the SuperLink's SuperExec looks for a run to start (Flower's default: 1 s);
    # a look is one query of its own state database.
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
}


def flower_bin(name: str) -> str:
    """A Flower executable from this interpreter's environment (then PATH)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found (is flwr installed in this environment?)")
    return found


def flower_env(flwr_home: Path | None = None) -> dict[str, str]:
    """The environment for Flower's processes: ours, plus this interpreter's bin directory
    first on PATH (Flower starts flwr-clientapp / flwr-serverapp helpers by name)."""
    env = {**os.environ, **FLOWER_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def _require(kit: Path, *names: str) -> None:
    missing = [n for n in names if not (kit / n).is_file()]
    if missing:
        raise ValueError(f"{kit}: missing {', '.join(missing)} (is this the right kit?)")


def superlink_command(
    kit: Path, state: Path, listen: str | None = None, serverapp_secret: Path | None = None
) -> list[str]:
    """flower-superlink with the kit's TLS certificate, node authentication on, its state in
    `state/`; listening on `listen` (default: the federation address's port on all
    interfaces - restrict who can reach it: see docs/DEPLOYMENT.md). With `serverapp_secret`:
    process isolation, its runs taken only by the worker holding that secret
    (`deploy/serverapp_worker.py`, started beside it by `deploy/link.py`); without, Flower's
    own SuperExec starts a `flwr-serverapp` process per run."""
    _require(kit, CA_CERT, SUPERLINK_CERT, SUPERLINK_KEY)
    fed = load_federation(kit)
    state.mkdir(parents=True, exist_ok=True)
    return [
        flower_bin("flower-superlink"),
        "--ssl-ca-certfile",
        str(kit / CA_CERT),
        "--ssl-certfile",
        str(kit / SUPERLINK_CERT),
        "--ssl-keyfile",
        str(kit / SUPERLINK_KEY),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--database",
        str(state / "state.db"),
        "--host",
        listen or "0.0.0.0",
        "--port",
        str(fed.port),
        *(
            ["--isolation", "process", "--superexec-auth-secret-file", str(serverapp_secret)]
            if serverapp_secret is not None
            else []
        ),
    ]


def node_state_dir(kit: Path) -> Path:
    """Where a node keeps what must outlive its processes (DP ledger, c_i, vertical parts, its
    vertical session registry): in its own kit."""
    return (kit / "state").resolve()


def node_options(pairs: Sequence[str]) -> dict[str, bool | int]:
    """`KEY=VALUE` settings an institution gives its own node (`protocol.NODE_OPTIONS`: the
    pair floor, the time split, sharing fairness figures), typed and checked as the node
    reads them; ValueError naming a key that is not one or a value it does not take."""
    out: dict[str, bool | int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in NODE_OPTIONS:
            raise ValueError(
                f"--node-config {pair!r}: KEY=VALUE with KEY one of {', '.join(NODE_OPTIONS)}"
            )
        try:
            parsed = NodeConfig.model_validate({key: value.strip()}).values()[key]
        except ValidationError as exc:
            raise ValueError(f"--node-config {key}: {exc.errors()[0]['msg']}") from exc
        out[key] = parsed
    return out


def node_config(
    kit: Path, data: Path, schema: Path | None, options: Mapping[str, bool | int] | None = None
) -> str:
    """The node config string: who this node is, its one data file, its signing key, and the
    settings it gives itself (`node_options`)."""
    node = load_node(kit)
    values: dict[str, str] = NodeConfig(
        institution=node.institution,
        data_file=str(data.resolve()),
        signing_key=str((kit / SIGNING_KEY).resolve()),
        schema_file=str(schema.resolve()) if schema is not None else None,
        # What must survive a crash (DP ledger, c_i), kept by the institution in its kit.
        state_dir=str(node_state_dir(kit)),
        # The federation's trust store: a vertical party checks relayed answers against it.
        trust_store=str((kit / TRUST_FILE).resolve()),
    ).values()
    for key, value in values.items():
        if "'" in value or '"' in value:
            raise ValueError(f"{key}: quotes are not allowed in paths here ({value})")
    own = [f"{k}={str(x).lower() if isinstance(x, bool) else int(x)}"
           for k, x in (options or {}).items()]  # fmt: skip
    return " ".join([*(f"{k}='{v}'" for k, v in values.items()), *own])


def supernode_command(
    kit: Path,
    data: Path,
    *,
    schema: Path | None = None,
    port: int = 9094,
    superlink: str | None = None,
    max_retries: int | None = None,
    superexec_secret: Path | None = None,
    poll_interval: float = supernode.DEFAULT_POLL,
    options: Mapping[str, bool | int] | None = None,
) -> list[str]:
    """flower-supernode for one institution: TLS to the federation's SuperLink only (the
    kit's CA), authenticated with the kit's node key; it reads only `data`. Process
    isolation: its ClientApp tasks are run by the node's long-lived worker
    (`deploy/clientapp_worker.py`, started beside it by `deploy/node.py`), which must present
    `superexec_secret` when one is given. Flower's own SuperNode, run with its idle polls
    shortened to `poll_interval` (`deploy/supernode.py`)."""
    _require(kit, CA_CERT, NODE_AUTH_KEY, SIGNING_KEY)
    if not data.is_file():
        raise ValueError(f"{data}: data file not found")
    if schema is not None and not schema.is_file():
        raise ValueError(f"{schema}: schema file not found")
    fed = load_federation(kit)
    cmd = [
        sys.executable,
        "-m",
        supernode.__name__,
        "--poll-interval",
        str(poll_interval),
        "--root-certificates",
        str(kit / CA_CERT),
        "--superlink",
        superlink or fed.superlink,
        "--auth-supernode-private-key",
        str(kit / NODE_AUTH_KEY),
        "--node-config",
        node_config(kit, data, schema, options),
        "--port",
        str(port),
        "--isolation",
        "process",
    ]
    if superexec_secret is not None:
        cmd += ["--superexec-auth-secret-file", str(superexec_secret)]
    if max_retries is not None:
        cmd += ["--max-retries", str(max_retries), "--max-wait-time", "15"]
    return cmd


# -- the coordinator's tools (flwr CLI against the SuperLink's Control API)


def write_connection(kit: Path, flwr_home: Path, name: str, address: str | None = None) -> None:
    """Add [superlink.NAME] (TLS with the kit's CA) to FLWR_HOME/config.toml."""
    fed = load_federation(kit)
    path = flwr_home / "config.toml"
    config: dict[str, Any] = {}
    if path.is_file():
        import tomllib

        config = tomllib.loads(path.read_text())
    config.setdefault("superlink", {})[name] = {
        "address": address or fed.superlink,
        "root-certificates": str((kit / CA_CERT).resolve()),
    }
    flwr_home.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(config))


def register_nodes(
    kit: Path, flwr_home: Path, connection: str, only: list[str] | None = None
) -> dict[str, str]:
    """`flwr supernode register` for each institution's node key; returns the output per
    institution. Every key must be in the kit before any is registered; the registrations
    then run side by side (each is a `flwr` process start, seconds of imports), and the first
    key the SuperLink refused, in the kit's order, is the error."""
    fed = load_federation(kit)
    keys = {inst: kit / "nodes" / f"{inst}.pub" for inst in only or fed.institutions}
    for inst, pub in keys.items():
        if not pub.is_file():
            raise ValueError(f"{pub}: no node key for {inst} in this kit")
    env = flower_env(flwr_home)
    started = {
        inst: subprocess.Popen(
            [flower_bin("flwr"), "supernode", "register", str(pub), connection, "--name", inst],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for inst, pub in keys.items()
    }
    deadline = time.monotonic() + 120
    answers: dict[str, tuple[int, str]] = {}
    try:
        for inst, proc in started.items():
            out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            answers[inst] = (proc.returncode, out + err if proc.returncode else out)
    finally:
        for proc in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for inst, (code, output) in answers.items():
        if code != 0:
            raise RuntimeError(f"registering {inst} failed: {output}".strip())
    return {inst: output.strip() for inst, (_, output) in answers.items()}


def run_config(kit: Path, out: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """The coordinator's run config: its identity from the kit, no pooled central evaluation
    (a coordinator holds no rows), wait for every institution."""
    _require(kit, TRUST_FILE, f"{COORDINATOR}.key")
    fed = load_federation(kit)
    own = {
        "trust_file": str((kit / TRUST_FILE).resolve()),
        "coordinator_key": str((kit / f"{COORDINATOR}.key").resolve()),
        "central_eval": False,
        "min_nodes": len(fed.institutions),
        "out_dir": str(out.resolve()),
    }
    return {**RunSettings.model_validate(own).model_dump(by_alias=True, include=set(own)), **extra}


def resolved_settings(app: Path, kit: Path, config: dict[str, Any]) -> RunSettings:
    """What the ServerApp will run: the app's `[tool.flwr.app.config]` with `config` over it
    (as `flwr run` fuses them), for every institution of the kit. Raises `SettingsError`
    naming the keys when the run could not work, before anything is started."""
    institutions = len(load_federation(kit).institutions)
    if not (app / "pyproject.toml").is_file():
        raise ValueError(f"{app}: not a Flower app directory (no pyproject.toml)")
    fused = get_fused_config_from_dir(app, config)
    return RunSettings.from_run_config(fused).for_institutions(institutions, "the kit's")


def resolved_vertical(app: Path, config: dict[str, Any]) -> VerticalSettings:
    """What the ServerApp will run for a `layout = "vertical"` run config (`SettingsError`
    naming the keys when it could not work)."""
    return VerticalSettings.from_app_config(get_fused_config_from_dir(app, config))


# A line of the ServerApp's log that starts round k of n (Flower's strategies log it).
_ROUND = re.compile(r"\[ROUND (\d+)/(\d+)\]")
_AUC = re.compile(r"'auc': ([0-9.eE+-]+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def round_started(line: str) -> tuple[int, int] | None:
    """(k, n) if this log line starts round k of n."""
    found = _ROUND.search(line)
    return (int(found.group(1)), int(found.group(2))) if found else None


def reported_auc(line: str) -> float | None:
    """The institutions' aggregated AUC if this log line reports one."""
    found = _AUC.search(line) if "Aggregated MetricRecord" in line else None
    return float(found.group(1)) if found else None


def start_run(
    app: Path,
    flwr_home: Path,
    connection: str,
    config: dict[str, Any],
    timeout: float,
    on_line: Callable[[str], None] | None = None,
) -> tuple[int, str]:
    """`flwr run APP CONNECTION` with `config` as a run-config TOML file (values keep their
    types), then the run's log streamed (`flwr log`) into FLWR_HOME/run-ID.log, each line
    also to `on_line`, until the run ends; returns (run id, final status read back with
    `flwr ls`, e.g. finished:completed)."""
    env = flower_env(flwr_home)
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory() as tmp, staged_app(app) as staged:
        overrides = Path(tmp) / "run-config.toml"
        overrides.write_text(tomli_w.dumps(config))
        proc = subprocess.run(
            [flower_bin("flwr"), "run", str(staged), connection, "--format", "json",
             "--run-config", str(overrides)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )  # fmt: skip
    run_id = started_run_id(proc.stdout, proc.stderr)
    log_path = flwr_home / f"run-{run_id}.log"  # the ServerApp's log: where a run says why
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            [flower_bin("flwr"), "log", str(run_id), connection, "--stream"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as stream,
    ):
        assert stream.stdout is not None
        # A run that never ends: its log stream is ended at the deadline, lines or not.
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), stream.terminate)
        watchdog.start()
        try:
            for line in stream.stdout:
                log.write(line)
                log.flush()
                if on_line is not None:
                    on_line(_ANSI.sub("", line.rstrip("\n")))
        finally:
            watchdog.cancel()
            if stream.poll() is None:
                stream.terminate()
    if time.monotonic() > deadline:
        raise RuntimeError(f"run {run_id} did not end within {timeout:.0f} s (see {log_path})")
    return run_id, run_status(flwr_home, connection, run_id)


def started_run_id(stdout: str, stderr: str = "") -> int:
    """The run id from `flwr run --format json`'s answer; RuntimeError if none started."""
    try:
        answer = json.loads(stdout)
        if answer.get("success") and answer.get("run-id") is not None:
            return int(answer["run-id"])
    except (ValueError, TypeError, AttributeError):
        pass
    raise RuntimeError(f"flwr run did not start a run:\n{(stdout + stderr)[-3000:]}")


def run_record(flwr_home: Path, connection: str, run_id: int) -> dict[str, Any]:
    """The SuperLink's record of a run (`flwr ls --run-id --format json`): status, its
    pending/starting/running/finished times, traffic."""
    proc = subprocess.run(
        [flower_bin("flwr"), "ls", connection, "--run-id", str(run_id), "--format", "json"],
        env=flower_env(flwr_home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        record = json.loads(proc.stdout)["runs"][0]
        if not isinstance(record, dict) or "status" not in record:
            raise KeyError("status")
        return record
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise RuntimeError(f"flwr ls gave no status: {proc.stdout}{proc.stderr}") from exc


def run_status(flwr_home: Path, connection: str, run_id: int) -> str:
    return str(run_record(flwr_home, connection, run_id)["status"])


def stop_run(flwr_home: Path, connection: str, run_id: int) -> bool:
    """`flwr stop RUN_ID`: the SuperLink ends the run and fails its undelivered messages.
    False when it was not running (already finished, or unknown)."""
    proc = subprocess.run(
        [flower_bin("flwr"), "stop", str(run_id), connection, "--format", "json"],
        env=flower_env(flwr_home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        return bool(json.loads(proc.stdout).get("success"))
    except (ValueError, AttributeError):
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for local demos and tests)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, host: str = "127.0.0.1", timeout: float = 60) -> None:
    """Wait until something accepts connections on host:port (a starting SuperLink)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


def shell_line(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
