"""The deployment's process plumbing without a deployment: how `link run` hands its settings
to `flwr run` and follows the run, the node's long-lived ClientApp worker and its
supervisor, the SuperNode's shortened polls. The real processes: tests/test_deployment.py."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from typer.testing import CliRunner

from jointcredit.cli.main import app as cli
from jointcredit.deploy import clientapp_worker, kits, node, processes, supernode
from jointcredit.server.rounds import run_rounds

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


class _FakeLog:
    """`flwr log RUN --stream`: the ServerApp's log lines, then the end of the stream."""

    lines: ClassVar[list[str]] = [
        "\x1b[92mINFO \x1b[0m:      [ROUND 1/2]\n",
        "INFO :      \t└──> Aggregated MetricRecord: {'auc': 0.71, 'ks': 0.3}\n",
        "INFO :      [ROUND 2/2]\n",
    ]

    def __init__(self, cmd: list[str], **_: Any) -> None:
        self.cmd = cmd
        self.stdout = iter(self.lines)

    def __enter__(self) -> _FakeLog:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def poll(self) -> int | None:
        return 0

    def terminate(self) -> None:
        return None


def test_start_run_hands_flwr_a_typed_toml_file_and_reads_the_run_id_from_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed: dict[str, Any] = {}

    def fake_run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        config = Path(cmd[cmd.index("--run-config") + 1])
        handed.update(tomllib.loads(config.read_text()))
        handed["--format"] = cmd[cmd.index("--format") + 1]
        # Log text that a regex on "started run N" would take; the JSON answer says 42.
        return subprocess.CompletedProcess(
            cmd, 0, '{"success": true, "run-id": "42"}', "Successfully started run 7"
        )

    monkeypatch.setattr(processes.subprocess, "run", fake_run)
    monkeypatch.setattr(processes.subprocess, "Popen", _FakeLog)
    monkeypatch.setattr(processes, "run_status", lambda *a: "finished:completed")
    config = {"privacy": "it's 'quoted'", "epsilon": 2.5, "central-eval": False, "rounds": 3}
    seen: list[str] = []
    run_id, status = processes.start_run(
        ROOT, tmp_path, "fed", config, timeout=60, on_line=seen.append
    )
    assert (run_id, status) == (42, "finished:completed")
    assert {k: handed[k] for k in config} == config  # types and quotes kept
    assert handed["--format"] == "json"
    assert processes.round_started(seen[0]) == (1, 2)  # ANSI colours stripped
    assert processes.reported_auc(seen[1]) == pytest.approx(0.71)
    assert "[ROUND 2/2]" in (tmp_path / "run-42.log").read_text()


class _EndlessLog(_FakeLog):
    """A log stream that only ends when terminated."""

    def __init__(self, cmd: list[str], **_: Any) -> None:
        import threading

        self.cmd, self.ended = cmd, threading.Event()
        self.stdout = self._lines()

    def _lines(self) -> Any:
        yield "INFO :      [ROUND 1/2]\n"
        self.ended.wait(30)

    def terminate(self) -> None:
        self.ended.set()

    def poll(self) -> int | None:
        return 0 if self.ended.is_set() else None


def test_a_run_that_never_ends_is_given_up_at_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        processes.subprocess,
        "run",
        lambda cmd, **_: subprocess.CompletedProcess(cmd, 0, '{"success": true, "run-id": "5"}'),
    )
    monkeypatch.setattr(processes.subprocess, "Popen", _EndlessLog)
    begun = time.monotonic()
    with pytest.raises(RuntimeError, match="did not end within"):
        processes.start_run(ROOT, tmp_path, "fed", {}, timeout=1.0)
    assert time.monotonic() - begun < 10


def test_stop_run_says_whether_the_superlink_stopped_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`link run --resume` stops the run it supersedes; one already over is no error."""
    answers = iter(['{"success": true, "run-id": "42"}', '{"success": false}', "not json"])
    asked: list[list[str]] = []

    def fake_run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        asked.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, next(answers), "")

    monkeypatch.setattr(processes.subprocess, "run", fake_run)
    assert processes.stop_run(tmp_path, "fed", 42)
    assert asked[0][1:] == ["stop", "42", "fed", "--format", "json"]
    assert not processes.stop_run(tmp_path, "fed", 42)
    assert not processes.stop_run(tmp_path, "fed", 42)


def test_a_run_that_did_not_start_is_an_error_whatever_the_log_says() -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        processes.started_run_id("Successfully started run 7")
    with pytest.raises(RuntimeError, match="did not start"):
        processes.started_run_id('{"success": false, "run-id": null}')
    assert processes.started_run_id('{"success": true, "run-id": "9"}') == 9


def test_link_run_takes_flowers_syntax_repeated_and_a_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "kits"
    kits.provision("f", ["bank-a", "bank-b"], "127.0.0.1:9092", out)
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(
        processes, "start_run", lambda *a, **k: sent.append(a[3]) or (1, "finished:failed")
    )
    link = ["link", "run", "--kit", str(out / kits.COORDINATOR_DIR), "--app", str(ROOT),
            "--flwr-home", str(tmp_path / "home")]  # fmt: skip
    result = runner.invoke(
        cli, [*link, "--run-config", "rounds=3 model='mlp'", "--run-config", "epsilon=2"]
    )
    assert result.exit_code == 1, result.output  # the (faked) run failed: exit 1
    assert sent[-1]["rounds"] == 3 and sent[-1]["model"] == "mlp" and sent[-1]["epsilon"] == 2
    overrides = tmp_path / "overrides.toml"
    overrides.write_text('rounds = 4\nlearning-rate = 0.05\nmodel = "logreg"\n')
    result = runner.invoke(cli, [*link, "--run-config", str(overrides)])
    assert sent[-1]["rounds"] == 4 and sent[-1]["learning-rate"] == 0.05, result.output
    bad = runner.invoke(cli, [*link, "--run-config", "rounds='many'"])
    assert bad.exit_code == 2 and "rounds" in bad.output


def test_the_worker_preloads_the_apps_own_clientapp() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = pyproject["tool"]["flwr"]["app"]["components"]["clientapp"]
    assert declared == clientapp_worker.CLIENTAPP


def test_supernode_polls_are_shortened_in_the_installed_flower(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flwr.supernode import start_client_internal as loop

    monkeypatch.setattr(loop, "time", time)  # restored after the test
    supernode.shorten_polls(0.05)
    begun = time.monotonic()
    loop.time.sleep(3)  # Flower's idle wait
    assert time.monotonic() - begun < 1
    assert loop.time.monotonic() > 0  # everything else is the time module's
    monkeypatch.setattr(loop, "time", object())
    with pytest.raises(RuntimeError, match="no longer uses the time module"):
        supernode.shorten_polls(0.05)


@pytest.mark.parametrize("function", ["pull_objects", "pull_and_inflate_object_from_tree"])
def test_object_pulls_retry_soon_in_the_installed_flower(
    monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    """A pull of objects not stored yet retries after 20 ms, not Flower's 1 s (timed against a
    store that has the object only from its second ask); a Flower whose function lost those
    defaults is refused."""
    from flwr.supercore.inflatable import inflatable_utils
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

    pull = getattr(inflatable_utils, function)
    monkeypatch.setattr(pull, "__kwdefaults__", dict(pull.__kwdefaults__))  # restored after
    supernode.shorten_object_pulls(function)
    assert pull.__kwdefaults__["initial_backoff"] == supernode.PULL_BACKOFF
    if function == "pull_objects":
        asked: list[str] = []

        def store(object_id: str) -> bytes:
            asked.append(object_id)
            if len(asked) == 1:
                raise ObjectUnavailableError(object_id)
            return b"content"

        begun = time.monotonic()
        assert pull(["a"], store) == {"a": b"content"}
        assert len(asked) == 2 and time.monotonic() - begun < 0.5
    monkeypatch.setattr(pull, "__kwdefaults__", {})
    with pytest.raises(RuntimeError, match="check the installed Flower"):
        supernode.shorten_object_pulls(function)


def test_node_start_prints_both_processes_with_tls_auth_and_process_isolation(
    tmp_path: Path,
) -> None:
    out = tmp_path / "kits"
    kits.provision("f", ["bank-a"], "127.0.0.1:9092", out)
    data = ROOT / "data" / "sba_sample" / "bbcn-bank.parquet"
    result = runner.invoke(
        cli, ["node", "start", "--kit", str(out / "bank-a"), "--data", str(data), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    node_line, worker_line = result.output.strip().splitlines()
    for flag in ("--root-certificates", "--auth-supernode-private-key", "data-file=",
                 "--isolation process", "--superexec-auth-secret-file"):  # fmt: skip
        assert flag in node_line
    assert "--insecure" not in node_line
    assert clientapp_worker.__name__ in worker_line and "--superexec-auth-secret-file" in (
        worker_line
    )
    assert "node-auth.key" not in worker_line and "signing.key" not in worker_line
    # The worker's vertical session host keeps its registry in the node's own state directory
    # (the one its node config names), so the node's next worker finds it.
    state = processes.node_state_dir(out / "bank-a")
    node_args = shlex.split(node_line)
    node_config = node_args[node_args.index("--node-config") + 1]
    assert f"--state-dir {state}" in worker_line and f"state-dir='{state}'" in node_config
    assert "--poll-interval 0.5" in node_line  # the default
    args = ["node", "start", "--kit", str(out / "bank-a"), "--data", str(data), "--dry-run"]
    tuned = runner.invoke(cli, [*args, "--poll-interval", "0.2"])
    assert tuned.exit_code == 0 and "--poll-interval 0.2" in tuned.output.splitlines()[0]
    assert runner.invoke(cli, [*args, "--poll-interval", "0"]).exit_code == 2


@pytest.mark.integration
def test_forked_tasks_do_not_share_numpy_randomness() -> None:
    """A fork starts with its parent's NumPy state; each task must draw its own."""
    np.random.seed(0)
    draws = []
    for _ in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            clientapp_worker._fresh_randomness()
            os.write(write, np.random.rand(4).tobytes())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as fh:
            draws.append(np.frombuffer(fh.read(), dtype=float))
        os.waitpid(pid, 0)
    assert not np.allclose(draws[0], draws[1])
    assert not np.allclose(draws[0], np.random.rand(4))


@pytest.mark.integration
def test_supervisor_restarts_a_dead_worker_and_ends_with_the_supernode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node, "RESTART_PAUSE", (0.1, 0.2))
    monkeypatch.setattr(node, "FAST_FAILURES", 1000)
    starts = tmp_path / "worker-starts"
    worker = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x')"]  # dies at once
    supernode_cmd = [sys.executable, "-c", "import time, sys; time.sleep(2.5); sys.exit(5)"]
    code = node.Supervisor(node.NodeCommands(supernode_cmd, worker), dict(os.environ)).run()
    assert code == 5  # the SuperNode's own exit code
    assert len(starts.read_text()) >= 2


@pytest.mark.integration
def test_supervisor_gives_up_on_a_worker_that_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node, "RESTART_PAUSE", (0.05, 0.05))
    worker = [sys.executable, "-c", "raise SystemExit(1)"]
    supernode_cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    begun = time.monotonic()
    code = node.Supervisor(node.NodeCommands(supernode_cmd, worker), dict(os.environ)).run()
    assert code == 1 and time.monotonic() - begun < 30  # the SuperNode was stopped too


@pytest.mark.integration
def test_supervisor_retries_a_refused_activation_for_a_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a crash the SuperLink refuses the node's key until its heartbeats lapse."""
    monkeypatch.setattr(node, "ACTIVATION_PAUSE", 0.1)
    monkeypatch.setattr(node, "activation_window", lambda: 1.5)
    starts = tmp_path / "node-starts"
    refused = (
        f"open({str(starts)!r}, 'a').write('x'); "
        "print('[code: 2004] Failed to activate SuperNode.'); raise SystemExit(1)"
    )
    worker = [sys.executable, "-c", "import time; time.sleep(60)"]
    commands = node.NodeCommands([sys.executable, "-c", refused], worker)
    code = node.Supervisor(commands, dict(os.environ)).run()
    assert code == 1 and len(starts.read_text()) >= 2
    other = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('y'); raise SystemExit(3)"]
    starts.unlink()
    code = node.Supervisor(node.NodeCommands(other, worker), dict(os.environ)).run()
    assert code == 3 and starts.read_text() == "y"  # any other failure: no retry


def test_the_nodes_secret_is_private_and_removed(tmp_path: Path) -> None:
    with node.private_secret() as secret:
        assert secret.stat().st_mode & 0o777 == 0o600
        assert secret.parent.stat().st_mode & 0o777 == 0o700
        assert len(secret.read_bytes()) == 32
    assert not secret.exists() and not secret.parent.exists()


class _OneRound:
    """A strategy and grid with one institution that reports an AUC: what `run_rounds` logs."""

    def configure_train(self, *_: object) -> list[object]:
        return []

    def aggregate_train(self, *_: object) -> tuple[None, MetricRecord]:
        return None, MetricRecord({"loss": 0.5})

    def configure_evaluate(self, *_: object) -> list[object]:
        return []

    def aggregate_evaluate(self, *_: object) -> MetricRecord:
        return MetricRecord({"auc": 0.7125, "num-examples": 10})

    def send_and_receive(self, **_: object) -> list[object]:
        return []


def test_link_run_progress_reads_the_auc_the_round_loop_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`link run` shows the institutions' AUC from the ServerApp's log: the round loop must
    still log the line Flower's `Strategy.start` did."""
    fake = _OneRound()
    with caplog.at_level(logging.INFO, logger="flwr"):
        run_rounds(
            fake,  # type: ignore[arg-type]
            fake,  # type: ignore[arg-type]
            ArrayRecord(),
            first_round=1,
            num_rounds=1,
            timeout=1.0,
            train_config=ConfigRecord(),
            evaluate_config=ConfigRecord(),
            evaluate_fn=lambda *_: None,
        )
    found = [processes.reported_auc(r.getMessage()) for r in caplog.records]
    assert 0.7125 in found


def test_supernode_local_waits_are_short_and_idle_polls_capped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flower's 0.5 s waits on the node's own state (its ClientApp's reply, an object being
    stored) come back after LOCAL_WAIT; its 3 s idle poll after the poll interval, or after
    ACTIVE_POLL while a run is sending the node messages."""
    slept: list[float] = []
    now = [1000.0]
    monkeypatch.setattr(supernode.time, "sleep", slept.append)
    monkeypatch.setattr(supernode.time, "monotonic", lambda: now[0])
    sleeps = supernode.ShortSleeps(cap=0.5)
    sleeps.sleep(3)  # no run yet: the configured poll
    sleeps.sleep(0.5)  # a message in hand (its reply awaited)
    sleeps.sleep(0.001)
    sleeps.sleep(3)  # during the run: the next message comes soon
    now[0] += supernode.ACTIVE_WINDOW + 1
    sleeps.sleep(3)  # the run is over: back to the configured poll
    assert slept == [0.5, supernode.LOCAL_WAIT, 0.001, supernode.ACTIVE_POLL, 0.5]
    assert supernode.ShortSleeps(cap=0.1).active_poll == 0.1  # never slower than asked
    assert supernode.ShortSleeps(cap=2.0).active_poll == 2.0  # a large federation's choice


def test_a_node_runs_only_its_installed_clientapp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The FAB comes from the coordinator: a FAB naming another ClientApp (code it could
    carry) fails the task; the node's own component gets the preloaded app object."""
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.common import config as flwr_config
    from flwr.supernode.runtime import run_clientapp as runner

    monkeypatch.setattr(runner, "get_load_client_app_fn", runner.get_load_client_app_fn)
    declared = {"clientapp": clientapp_worker.CLIENTAPP}
    monkeypatch.setattr(flwr_config, "get_project_dir", lambda *a: tmp_path)
    monkeypatch.setattr(
        flwr_config,
        "get_project_config",
        lambda _d: {"tool": {"flwr": {"app": {"components": dict(declared)}}}},
    )
    app = clientapp_worker.preload(clientapp_worker.CLIENTAPP, warm=())
    clientapp_worker.pin_clientapp(app, clientapp_worker.CLIENTAPP)
    load = runner.get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
    assert load("jointcredit/jointcredit", "1.0.0", "ab" * 32) is app
    declared["clientapp"] = "evil:app"
    with pytest.raises(LoadClientAppError, match="evil:app"):
        load("jointcredit/jointcredit", "1.0.0", "ab" * 32)


def test_the_node_worker_reads_the_nodes_file_ahead(tmp_path: Path) -> None:
    out = tmp_path / "kits"
    kits.provision("f", ["bank-a"], "127.0.0.1:9092", out)
    data = ROOT / "data" / "sba_sample" / "bbcn-bank.parquet"
    schema = ROOT / "data" / "sba_sample" / "schema.toml"
    args = ["node", "start", "--kit", str(out / "bank-a"), "--data", str(data), "--dry-run"]
    result = runner.invoke(cli, [*args, "--schema", str(schema)])
    assert result.exit_code == 0, result.output
    worker_line = result.output.strip().splitlines()[1]
    assert f"--data-file {data.resolve()}" in worker_line
    assert f"--schema {schema.resolve()}" in worker_line
