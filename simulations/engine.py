"""Run the Flower app in Flower's simulation runtime, in this process.

`flwr run .` with the local connection starts a detached SuperLink that outlives the run,
installs the app's dependencies into a fresh environment per run (a multi-GB torch download)
and exits 0 even when the ServerApp fails. For `jointcredit simulate` we call the engine that
`flwr run` itself uses (`flwr.simulation.run_simulation._run_simulation`): same ServerApp, same
ClientApp, same Ray backend, but nothing left running and the ServerApp's exception re-raised.

This is the one place that touches Flower's private simulation API; keep it that way.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from flwr.app import Context, RecordDict

from jointcredit.federation.settings import RunSettings

SERVER_APP = "jointcredit.server.app:app"
CLIENT_APP = "jointcredit.client.app:app"


def _toml_value(v: int | float | bool | str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_app_dir(directory: Path, settings: RunSettings) -> None:
    """A minimal Flower app directory whose config is exactly this run's settings.

    Simulated ClientApps read their run config from the app directory's pyproject.toml.
    """
    config = "\n".join(f'"{k}" = {_toml_value(v)}' for k, v in settings.to_run_config().items())
    (directory / "pyproject.toml").write_text(
        f"""[project]
name = "jointcredit-run"
version = "0.1.0"

[tool.flwr.app]
publisher = "jointcredit"

[tool.flwr.app.components]
serverapp = "{SERVER_APP}"
clientapp = "{CLIENT_APP}"

[tool.flwr.app.config]
{config}
""",
        encoding="utf-8",
    )


def run_simulation(settings: RunSettings, *, num_nodes: int, cpus_per_client: int = 2) -> None:
    """Run to completion; raises whatever the ServerApp raised."""
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

    backend_config = {
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
        "init_args": {"log_to_driver": False, "logging_level": logging.ERROR},
    }
    with tempfile.TemporaryDirectory(prefix="jointcredit-app-") as app_dir:
        write_app_dir(Path(app_dir), settings)
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
            server_app_attr=SERVER_APP,
            client_app_attr=CLIENT_APP,
            backend_name="ray",
            backend_config=backend_config,  # type: ignore[arg-type]
            server_app_context=context,
            app_dir=app_dir,
            run=run,
            is_app=True,
        )
