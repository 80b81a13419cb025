"""The coordinator's ServerApp: the federation run from the coordinator's side
(`coordinator.Coordinator`: join, train, personalise, write), with this run's identity; or,
when the run config says `layout = "vertical"`, the vertical federation's coordinator
(`server.vertical_app`). One ServerApp for both, as a deployed SuperLink runs only this one."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from jointcredit.federation.settings import RunSettings
from jointcredit.federation.vertical import is_vertical
from jointcredit.server import vertical_app
from jointcredit.server.coordinator import Coordinator
from jointcredit.server.identity import coordinator_identity, discard_generated

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    if is_vertical(dict(context.run_config)):
        vertical_app.main(grid, context)
        return
    settings = RunSettings.from_run_config(context.run_config)
    identity = coordinator_identity(settings, context.run_id)
    try:
        Coordinator(grid, context, settings, identity).run()
    finally:
        discard_generated(identity)  # simulation keys made for this run only
