"""The coordinator's long-lived ServerApp worker, beside `flower-superlink --isolation process`.

Under Flower's default (subprocess) isolation the SuperLink starts `flower-superexec`, which
polls for a run and starts a fresh `flwr-serverapp` process for it; that process imports
Flower, torch, scikit-learn and the app before the run's first message (the cost:
docs/RELIABILITY.md). This worker imports the app once, then runs each run
in a fork of itself through Flower's own `run_serverapp` (the body of `flwr-serverapp`), with
the run's output mirrored to the SuperLink's log stream as that process does.

It runs only the ServerApp this machine installed (`pin_serverapp`): a run whose FAB names any
other ServerApp fails, so whoever reaches the Control API can no longer have the SuperLink's
host execute code from a FAB. Only a worker holding the SuperLink's per-start secret may take
its tasks (`SuperExec` authentication on `AcquireTask`).

Started and supervised by `jointcredit link start` (`deploy/link.py`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from jointcredit.deploy.app_worker import (
    TaskWorker,
    import_component,
    read_secret,
    run_forked_task,
)

# The app's ServerApp, as `[tool.flwr.app.components] serverapp` names it.
SERVERAPP = "jointcredit.server.app:app"
# Between polls for a new run (flower-superexec: 1 s). Each poll is a query of the SuperLink's
# state, so a shorter interval costs an idle SuperLink CPU (docs/RELIABILITY.md); a run's
# first message waits up to the SuperNodes' idle poll (0.5 s) anyway.
POLL_SECONDS = 0.5


def preload(reference: str) -> object:
    """Import the ServerApp `module:attribute` now, so that no run has to."""
    from flwr.serverapp import ServerApp

    return import_component(reference, ServerApp)


def pin_serverapp(app: object, reference: str) -> None:
    """Have Flower's `run_serverapp` run `app`, the ServerApp installed here, instead of
    importing the component a run's FAB names. A FAB naming any other component fails its
    run loudly. Refuses if Flower's runtime no longer calls the runner by that name."""
    from flwr.serverapp import ServerApp
    from flwr.serverapp.server_app import LoadServerAppError

    # The module (its package re-exports a function of the same name).
    runtime = importlib.import_module("flwr.superlink.runtime.run_serverapp")

    if not isinstance(app, ServerApp):
        raise TypeError(f"{reference} is not a Flower ServerApp")
    original: Callable[..., Any] | None = getattr(runtime, "run_", None)
    if not callable(original) or "run_" not in runtime.run_serverapp.__code__.co_names:
        raise RuntimeError(
            "flwr.superlink.runtime.run_serverapp no longer runs the app through run_: check "
            "the installed Flower before pinning the coordinator's ServerApp"
        )
    runner: Callable[..., Any] = original

    def run_pinned(*, grid: Any, server_app_dir: str, server_app_attr: str, context: Any) -> Any:
        if server_app_attr != reference:
            raise LoadServerAppError(
                f"the run's app names ServerApp {server_app_attr!r}; this SuperLink runs only "
                f"its installed {reference}"
            )
        return runner(
            grid=grid, server_app_dir=server_app_dir, context=context, loaded_server_app=app
        )

    setattr(runtime, "run_", run_pinned)  # noqa: B010


def _run_task(address: str, token: str, certificates: bytes | None) -> NoReturn:
    """In the fork: exactly what `flwr-serverapp --token TOKEN` does."""

    def body() -> None:
        from queue import Queue

        from flwr.supercore.logger import mirror_output_to_queue, restore_output
        from flwr.superlink.runtime.run_serverapp import run_serverapp

        log_queue: Queue[str | None] = Queue()
        mirror_output_to_queue(log_queue)
        try:
            run_serverapp(
                runtime_api_address=address,
                log_queue=log_queue,
                token=token,
                insecure=certificates is None,
                certificates=certificates,
                parent_pid=os.getppid(),
                runtime_dependency_install=False,
            )
        finally:
            restore_output()

    run_forked_task(body)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runtime-api-address", required=True, help="the SuperLink's HOST:PORT")
    ap.add_argument("--root-certificates", type=Path, default=None, help="its CA (TLS)")
    ap.add_argument("--serverapp", default=SERVERAPP, help="module:attribute to preload")
    ap.add_argument("--superexec-auth-secret-file", type=str, default=None)
    args = ap.parse_args(argv)
    secret = read_secret(args.superexec_auth_secret_file)
    certificates = args.root_certificates.read_bytes() if args.root_certificates else None
    pin_serverapp(preload(args.serverapp), args.serverapp)
    from flwr.supercore.constant import TaskType

    importlib.import_module("flwr.superlink.runtime.run_serverapp")  # imported once, here

    address = args.runtime_api_address
    print(f"ServerApp worker ready ({args.serverapp}), polling {address}")
    sys.stdout.flush()
    return TaskWorker(
        address,
        TaskType.SERVER_APP.value,
        lambda token: _run_task(address, token, certificates),
        secret=secret,
        poll=POLL_SECONDS,
        root_certificates=certificates,
    ).serve()


if __name__ == "__main__":
    raise SystemExit(main())
