"""One institution's long-lived ClientApp worker, beside `flower-supernode --isolation process`.

Under process isolation the SuperNode starts nothing itself: something must poll its Runtime
API (loopback) for ClientApp tasks. Flower's `flower-superexec` does that by starting a fresh
`flwr-clientapp` process per task, i.e. per message, which imports Flower, torch and the app
before handling its one message and exiting. This worker imports the app once, then runs each
task in a fork of itself (`app_worker`) through Flower's own `run_clientapp` (the body of
`flwr-clientapp`):
still one process per message, the node's state travelling only in the task's Context as
Flower intends, but nothing left to import. A vertical run's party sessions, which must
outlive a message, are kept by the node's session host (`deploy.session_host`), started here.

Started and supervised by `jointcredit node start` (`deploy/node.py`); run by hand as
`python -m jointcredit.deploy.clientapp_worker --runtime-api-address 127.0.0.1:9094`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from jointcredit.deploy.app_worker import (
    TaskWorker,
    fresh_randomness,
    import_component,
    read_secret,
    run_forked_task,
)
from jointcredit.deploy.session_host import session_host
from jointcredit.deploy.supernode import shorten_object_pulls

# The app's ClientApp, as `[tool.flwr.app.components] clientapp` names it (a unit test holds
# the two together). The node runs its installed jointcredit, as `flwr-clientapp` would.
CLIENTAPP = "jointcredit.client.app:app"
# Imported lazily by the first use of what the app calls in every task: torch's optimizers
# import torch._dynamo when the first one is built (seconds of imports, per task if not here).
WARM = ("torch._dynamo",)
# Called with the node's data and schema files before the first task, so that no task reads
# and validates the node's file again (each fork inherits the validated rows).
PRELOAD_DATA = "jointcredit.client.data:preload_node_file"
POLL_SECONDS = 0.1  # between task polls on the loopback Runtime API
_fresh_randomness = fresh_randomness  # the name the tests and older scripts use


def pin_clientapp(app: object, reference: str) -> None:
    """Have Flower's `run_clientapp` (in this process and its forks) run `app`, the ClientApp
    this node installed, instead of importing the component a run's FAB names: the FAB comes
    from the coordinator, and a node must never execute code another party sent. A FAB that
    names any other component fails its task loudly. Refuses if Flower's runner no longer
    looks the loader up by that name (the installed Flower then needs a look)."""
    from flwr.clientapp.client_app import ClientApp, LoadClientAppError
    from flwr.common.config import get_project_config, get_project_dir
    from flwr.supernode.runtime import run_clientapp as runner

    if not isinstance(app, ClientApp):
        raise TypeError(f"{reference} is not a Flower ClientApp")
    calls = runner.run_clientapp.__code__.co_names
    if not callable(getattr(runner, "get_load_client_app_fn", None)) or (
        "get_load_client_app_fn" not in calls
    ):
        raise RuntimeError(
            "flwr.supernode.runtime.run_clientapp no longer loads the app through "
            "get_load_client_app_fn: check the installed Flower before pinning the node's "
            "ClientApp"
        )

    def get_load_client_app_fn(
        default_app_ref: str, app_path: str | None, multi_app: bool
    ) -> Callable[[str, str, str], ClientApp]:
        def load(fab_id: str, fab_version: str, fab_hash: str) -> ClientApp:
            config = get_project_config(get_project_dir(fab_id, fab_version, fab_hash))
            named = config.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
            declared = named.get("clientapp") if isinstance(named, dict) else None
            if declared != reference:
                raise LoadClientAppError(
                    f"the run's app names ClientApp {declared!r}; this node runs only its "
                    f"installed {reference}"
                )
            return app

        return load

    setattr(runner, "get_load_client_app_fn", get_load_client_app_fn)  # noqa: B010


def preload_data(reference: str, data_file: str, schema_file: str) -> None:
    """Call the app's `module:function` that reads the node's file ahead of its tasks. A file
    it cannot read is left for the tasks to report (as they would without this)."""
    module_name, _, name = reference.partition(":")
    function = getattr(importlib.import_module(module_name), name)
    try:
        function(data_file, schema_file)
    except Exception as exc:  # each task reads the file again and says why
        print(f"ClientApp worker: the node's file was not read ahead ({type(exc).__name__})")


def preload(reference: str, warm: Sequence[str] = WARM) -> object:
    """Import the ClientApp `module:attribute` and the `warm` modules now, so no task has
    to."""
    for name in warm:
        importlib.import_module(name)
    from flwr.clientapp import ClientApp

    return import_component(reference, ClientApp)


def _run_task(address: str, token: str) -> NoReturn:
    """In the fork: exactly what `flwr-clientapp --token TOKEN` does."""

    def body() -> None:
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        run_clientapp(
            runtime_api_address=address,
            token=token,
            insecure=True,  # loopback to this node's own SuperNode, as flower-superexec does
            certificates=None,
            parent_pid=os.getppid(),
            runtime_dependency_install=False,
        )

    run_forked_task(body)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runtime-api-address", required=True, help="the SuperNode's HOST:PORT")
    ap.add_argument("--clientapp", default=CLIENTAPP, help="module:attribute to preload")
    ap.add_argument("--superexec-auth-secret-file", type=str, default=None)
    ap.add_argument("--data-file", default=None, help="the node's file, read before any task")
    ap.add_argument("--schema", default=None, help="its schema (with --data-file)")
    ap.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the node's state directory (its vertical session host keeps its socket and "
        "session registry there; without it, a temporary directory)",
    )
    args = ap.parse_args(argv)
    secret = read_secret(args.superexec_auth_secret_file)
    pin_clientapp(preload(args.clientapp), args.clientapp)
    if args.data_file and args.schema:
        preload_data(PRELOAD_DATA, args.data_file, args.schema)
    # The task's first pull of its message often comes while the SuperNode is still fetching
    # the message's objects from the SuperLink (it hands out the task first).
    shorten_object_pulls("pull_and_inflate_object_from_tree")
    from flwr.supernode.runtime import run_clientapp  # noqa: F401 - imported once, here

    print(f"ClientApp worker ready ({args.clientapp}), polling {args.runtime_api_address}")
    sys.stdout.flush()
    from flwr.supercore.constant import TaskType

    address = args.runtime_api_address
    # Vertical runs keep each party's session (secrets, training thread) in the node's
    # session host, which the forked tasks reach over a node-local socket; one that died is
    # restarted before the next task is taken.
    with session_host(args.state_dir) as host:
        return TaskWorker(
            address,
            TaskType.CLIENT_APP.value,
            lambda token: _run_task(address, token),
            secret=secret,
            poll=POLL_SECONDS,
            tick=host.check,
        ).serve()


if __name__ == "__main__":
    raise SystemExit(main())
