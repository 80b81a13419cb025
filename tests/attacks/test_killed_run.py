"""Attack: a killed simulation left every private key behind (issue 19, item 2). With the
leftover coordinator key a modified model was signed that `verify` and `serve` accepted under
the run's pinned key id. Whatever ends a run (SIGKILL, SIGTERM, Ctrl-C), no key of it remains
and none of the processes it started (Ray's workers, raylet, agents) is left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from jointcredit.simulations.guard import SECRETS_ENV

pytestmark = pytest.mark.e2e


def _wait(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _training(proc: psutil.Process) -> bool:
    for child in proc.children(recursive=True):
        try:
            if "ClientAppActor" in " ".join(child.cmdline()):
                return True
        except psutil.Error:
            continue
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_key_and_no_process_outlives_a_killed_run(tmp_path: Path, sig: signal.Signals) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "jointcredit.cli",
        "simulate",
        "--institutions",
        "3",
        "--rounds",
        "200",
        "--no-baselines",
        "--no-audit",
        "--out",
        str(tmp_path / "out"),
    ]
    run = subprocess.Popen(cmd, env={**os.environ, SECRETS_ENV: str(secrets)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)  # fmt: skip
    driver = psutil.Process(run.pid)
    try:
        _wait("the run's keys", lambda: any(secrets.glob("jointcredit-keys-*/coordinator.key")),
              120)  # fmt: skip
        _wait("training to start", lambda: _training(driver), 180)
        started = {p.pid: p.create_time() for p in driver.children(recursive=True)}
        run.send_signal(sig)
        run.wait(timeout=60)
        _wait("the keys to be removed", lambda: not any(secrets.iterdir()), 15)

        def gone() -> bool:
            for pid, created in started.items():
                try:
                    proc = psutil.Process(pid)
                    if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                        return False
                except psutil.NoSuchProcess:
                    continue
            return True

        _wait("the run's processes to stop", gone, 20)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
