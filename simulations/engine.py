"""Run the Flower app in Flower's simulation runtime, in this process.

`flwr run .` with the local connection starts a detached SuperLink that outlives the run,
installs the app's dependencies into a fresh environment per run (a multi-GB torch download)
and exits 0 even when the ServerApp fails. For `jointcredit simulate` we call the engine that
`flwr run` itself uses (`flwr.simulation.run_simulation._run_simulation`): same ServerApp, same
ClientApp, same Ray backend, but nothing left running and the ServerApp's exception re-raised.

Where Ray runs: by default a private Ray instance on this machine, reachable over loopback
only; with `ray_address` an existing Ray cluster (`ray start --head` on one machine, `ray start
--address HOST:PORT` on the others), whose nodes then host the institutions. Every node of such a
cluster needs this package installed (the actors import the ClientApp by name) and must reach
what an institution's node reads: its data file (a bring-your-own directory) and the run's
signing keys (`simulations/guard.py`: on `/dev/shm` of the machine running `simulate`), so a
cluster across machines needs them on a shared file system or `JOINTCREDIT_SECRETS_DIR` on one
(docs/RELIABILITY.md).

This is the one place that touches Flower's private simulation API, and Ray's switch between
one machine and a cluster; keep it that way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any

from flwr.app import Context, RecordDict

from jointcredit.federation.settings import RunSettings
from jointcredit.federation.vertical import VerticalSettings

SERVER_APP = "jointcredit.server.app:app"
CLIENT_APP = "jointcredit.client.app:app"
VERTICAL_SERVER_APP = "jointcredit.server.vertical_app:app"
VERTICAL_CLIENT_APP = "jointcredit.client.vertical_app:app"


def _toml_value(v: int | float | bool | str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_app_dir(
    directory: Path,
    settings: RunSettings | VerticalSettings,
    server_app: str = "",
    client_app: str = "",
) -> None:
    """A minimal Flower app directory whose config is exactly this run's settings (apps:
    empty for `SERVER_APP` / `CLIENT_APP`, read when called, so a test can substitute one).

    Simulated ClientApps read their run config from the app directory's pyproject.toml.
    """
    server_app, client_app = server_app or SERVER_APP, client_app or CLIENT_APP
    config = "\n".join(f'"{k}" = {_toml_value(v)}' for k, v in settings.to_run_config().items())
    (directory / "pyproject.toml").write_text(
        f"""[project]
name = "jointcredit-run"
version = "0.1.0"

[tool.flwr.app]
publisher = "jointcredit"

[tool.flwr.app.components]
serverapp = "{server_app}"
clientapp = "{client_app}"

[tool.flwr.app.config]
{config}
""",
        encoding="utf-8",
    )


# Ray's switch for clusters (on by default on Linux). Off, Ray takes the loopback address as
# its node's: every server it starts listens on 127.0.0.1 only. On, Ray binds all interfaces
# and rewrites a loopback address to the machine's network address.
RAY_CLUSTERS_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


FLOWER_DELIVERY_ENV = "JOINTCREDIT_FLOWER_DELIVERY"


class RayAddressError(ValueError):
    """A `--ray-address` that is not HOST:PORT."""


def parse_ray_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets) -> (host, port), or `RayAddressError`."""
    host, sep, port = address.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayAddressError(
            f"ray-address {address!r}: expected HOST:PORT of a Ray cluster's head (the "
            "address `ray start --head` prints)"
        )
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _ray_on_loopback(on: bool) -> Iterator[None]:
    """Ray in this process treats this machine as a single host reached over loopback (`on`:
    a private instance, or a cluster whose nodes all listen on loopback), or as a cluster
    node with a network address. Restored afterwards: one process may run both kinds."""
    from ray._private import ray_constants

    saved = (os.environ.get(RAY_CLUSTERS_ENV), ray_constants.ENABLE_RAY_CLUSTER)
    if on:
        os.environ[RAY_CLUSTERS_ENV] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop(RAY_CLUSTERS_ENV, None)
        else:
            os.environ[RAY_CLUSTERS_ENV] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]


@contextlib.contextmanager
def _one_pass_delivery() -> Iterator[None]:
    """Flower's simulation hands messages to the backend from a loop that asks the link state,
    node by node, for that node's next message, every 0.1 s; each ask scans every stored
    message, so one sweep costs nodes x messages: most of the driver's time from a few hundred
    institutions on (docs/RELIABILITY.md). This loop, in its place for the run, makes the same
    checks and deliveries (per sweep a node's first undelivered message; expired or foreign
    messages deleted; delivery stamped) in one scan per sweep. `JOINTCREDIT_FLOWER_DELIVERY=1`
    keeps Flower's loop (to measure the difference)."""
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate import InMemoryLinkState
    from flwr.supercore.date import now

    flower_loop = vce_api.add_messages_to_queue

    def add_messages_to_queue(
        state: Any, queue: Queue[Any], nodes_mapping: dict[int, int], f_stop: threading.Event
    ) -> None:
        if not isinstance(state, InMemoryLinkState):
            flower_loop(state, queue, nodes_mapping, f_stop)
            return
        nodes = set(nodes_mapping)
        while not f_stop.is_set():
            picked: dict[int, Any] = {}
            with state.lock:
                for msg_id in list(state.message_ins_store):
                    state._check_stored_messages({msg_id})
                    msg = state.message_ins_store.get(msg_id)
                    if msg is None or msg.metadata.delivered_at != "":
                        continue
                    node = msg.metadata.dst_node_id
                    if node in nodes and node not in picked:
                        picked[node] = msg
                delivered_at = now().isoformat()
                for msg in picked.values():
                    msg.metadata.delivered_at = delivered_at
            for msg in picked.values():
                queue.put(msg)
            f_stop.wait(0.1)

    if os.environ.get(FLOWER_DELIVERY_ENV) != "1":
        vce_api.add_messages_to_queue = add_messages_to_queue
    try:
        yield
    finally:
        vce_api.add_messages_to_queue = flower_loop


def run_simulation(
    settings: RunSettings | VerticalSettings,
    *,
    num_nodes: int,
    cpus_per_client: int = 2,
    ray_address: str = "",
    server_app: str = "",
    client_app: str = "",
) -> None:
    """Run to completion; raises whatever the ServerApp raised. `ray_address`: HOST:PORT of
    an existing Ray cluster to run the institutions on (left running afterwards); empty: a
    private Ray instance on this machine, stopped at the end. `server_app`, `client_app`:
    the apps (the vertical federation's: `VERTICAL_SERVER_APP`, `VERTICAL_CLIENT_APP`)."""
    # Quiet, self-contained runs: no telemetry, no update check, Ray logs not echoed.
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")

    # Every private name comes from the module `flwr run`'s simulation uses, so an upgrade that
    # moves them fails here, at import, not halfway through a run.
    from flwr.simulation.run_simulation import (  # type: ignore[attr-defined]
        NOOP_FEDERATION_ID,
        RUN_ID_NUM_BYTES,
        SUPERLINK_NODE_ID,
        TASK_ID_NUM_BYTES,
        EventType,
        Run,
        TaskIdentity,
        _run_simulation,
        generate_rand_int_from_bytes,
    )

    run_id = generate_rand_int_from_bytes(RUN_ID_NUM_BYTES)
    run = Run.create_empty(run_id=run_id)
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    TaskIdentity.task_id = run.primary_task_id
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID

    host = parse_ray_address(ray_address)[0] if ray_address else ""
    backend_config = {
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
        "init_args": {
            # "local": a private instance even when RAY_ADDRESS names a cluster.
            "address": ray_address.strip() or "local",
            "log_to_driver": False,
            "logging_level": logging.ERROR,
        },
    }
    with (
        _one_pass_delivery(),
        _ray_on_loopback(not host or is_loopback(host)),
        tempfile.TemporaryDirectory(prefix="jointcredit-app-") as app_dir,
    ):
        server_app, client_app = server_app or SERVER_APP, client_app or CLIENT_APP
        write_app_dir(Path(app_dir), settings, server_app, client_app)
        context = Context(
            run_id=run_id,
            node_id=0,
            node_config={},
            state=RecordDict(),
            run_config=dict(settings.to_run_config()),
        )
        _run_simulation(
            num_supernodes=num_nodes,
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            server_app_attr=server_app,
            client_app_attr=client_app,
            backend_name="ray",
            backend_config=backend_config,  # type: ignore[arg-type]
            server_app_context=context,
            app_dir=app_dir,
            run=run,
            is_app=True,
        )
