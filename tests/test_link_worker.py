"""`jointcredit link start`: the SuperLink in process isolation and the coordinator's
long-lived ServerApp worker, which runs only the ServerApp installed on its machine. A real
deployment through it: tests/test_deploy_kill.py (and scripts/reliability_deploy.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jointcredit.cli.main import app as cli
from jointcredit.deploy import kits, link, serverapp_worker

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_the_worker_preloads_the_apps_own_serverapp() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = pyproject["tool"]["flwr"]["app"]["components"]["serverapp"]
    assert declared == serverapp_worker.SERVERAPP


def test_link_start_prints_the_superlink_in_process_isolation_and_its_worker(
    tmp_path: Path,
) -> None:
    out = tmp_path / "kits"
    kits.provision("f", ["bank-a"], "127.0.0.1:9092", out)
    result = runner.invoke(cli, ["link", "start", "--kit", str(out / "coordinator"), "--dry-run"])
    assert result.exit_code == 0, result.output
    link_line, worker_line = result.output.strip().splitlines()
    flags = [
        "--ssl-certfile",
        "--enable-supernode-auth",
        "--isolation process",
        "--superexec-auth-secret-file",
        "--disable-runtime-dependency-installation",
    ]
    for flag in flags:
        assert flag in link_line
    assert "--insecure" not in link_line
    assert serverapp_worker.__name__ in worker_line
    assert "--runtime-api-address 127.0.0.1:9092" in worker_line
    assert "--root-certificates" in worker_line and "--superexec-auth-secret-file" in worker_line
    assert kits.SUPERLINK_KEY not in worker_line  # the worker holds no TLS key


def test_the_worker_reaches_the_runtime_api_where_the_certificate_is_valid(
    tmp_path: Path,
) -> None:
    """Loopback only when the SuperLink's certificate names 127.0.0.1 (TLS would fail
    otherwise) and the SuperLink listens there."""
    named = kits.provision("f", ["bank-a"], "link.example.org:9092", tmp_path / "a")
    assert link.runtime_address(named.coordinator, None) == "link.example.org:9092"
    both = kits.provision(
        "f", ["bank-a"], "link.example.org:9092", tmp_path / "b", extra_hosts=["127.0.0.1"]
    )
    assert link.runtime_address(both.coordinator, None) == "127.0.0.1:9092"
    assert link.runtime_address(both.coordinator, "0.0.0.0") == "127.0.0.1:9092"
    assert link.runtime_address(both.coordinator, "link.example.org") == "link.example.org:9092"
    # An address the certificate does not name: the worker could never connect (TLS), and
    # runs would wait without an error; refused at start instead, naming the fix.
    with pytest.raises(ValueError, match=r"--extra-host 10\.1\.2\.3"):
        link.runtime_address(both.coordinator, "10.1.2.3")
    with pytest.raises(ValueError, match=r"does not name --listen 127\.0\.0\.1"):
        link.runtime_address(named.coordinator, "127.0.0.1")
    refused = runner.invoke(
        cli, ["link", "start", "--kit", str(named.coordinator), "--listen", "127.0.0.1"]
    )
    assert refused.exit_code == 2 and "--extra-host 127.0.0.1" in refused.output


def test_the_superlink_runs_only_its_installed_serverapp(monkeypatch: pytest.MonkeyPatch) -> None:
    """A FAB naming another ServerApp (code it could carry) fails the run; the installed
    component runs the preloaded app object, never an import from the FAB's directory."""
    import importlib

    from flwr.serverapp.server_app import LoadServerAppError

    runtime = importlib.import_module("flwr.superlink.runtime.run_serverapp")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(runtime, "run_", lambda **kw: calls.append(kw) or kw["context"])
    app = serverapp_worker.preload(serverapp_worker.SERVERAPP)
    serverapp_worker.pin_serverapp(app, serverapp_worker.SERVERAPP)
    ran = runtime.run_(
        grid="grid", server_app_dir="/fab", server_app_attr=serverapp_worker.SERVERAPP,
        context="ctx",
    )  # fmt: skip
    assert ran == "ctx"
    assert calls == [
        {"grid": "grid", "server_app_dir": "/fab", "context": "ctx", "loaded_server_app": app}
    ]
    with pytest.raises(LoadServerAppError, match="evil:app"):
        runtime.run_(grid="grid", server_app_dir="/fab", server_app_attr="evil:app", context=1)
    assert len(calls) == 1


def test_pinning_refuses_a_flower_without_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pin patches the name Flower's `run_serverapp` calls: if it stops calling it (or
    it is gone), patching would pin nothing, so the worker refuses to start."""
    import importlib

    runtime = importlib.import_module("flwr.superlink.runtime.run_serverapp")
    app = serverapp_worker.preload(serverapp_worker.SERVERAPP)
    with monkeypatch.context() as m:
        m.setattr(runtime, "run_serverapp", lambda **kw: None)  # loads the app another way
        with pytest.raises(RuntimeError, match="run_"):
            serverapp_worker.pin_serverapp(app, serverapp_worker.SERVERAPP)
    monkeypatch.delattr(runtime, "run_")
    with pytest.raises(RuntimeError, match="run_"):
        serverapp_worker.pin_serverapp(app, serverapp_worker.SERVERAPP)
    with pytest.raises(TypeError):
        serverapp_worker.pin_serverapp(object(), "x:y")


@pytest.mark.integration
def test_supervised_processes_do_not_outlive_a_killed_supervisor() -> None:
    """SIGKILL to `link start` / `node start` (no chance to stop its children): the SuperLink
    or SuperNode and the worker get SIGTERM from the kernel rather than keep the port and
    take tasks with nobody supervising them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    script = (
        "import os, sys\n"
        "from jointcredit.deploy import node\n"
        f"cmds = node.NodeCommands({sleeper!r}, {sleeper!r})\n"
        "node.Supervisor(cmds, dict(os.environ)).run()\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        children: list[psutil.Process] = []
        while len(children) < 2 and time.monotonic() < deadline:
            children = psutil.Process(supervisor.pid).children()
            time.sleep(0.1)
        assert len(children) == 2
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, alive
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
