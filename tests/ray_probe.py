"""jointcredit's ClientApp, recording where each simulated institution's reply was made: the
Ray node, the worker's pid and its parent (that node's raylet). Written beside the run's OUT
(`placements/`), for tests that must show a run really spread over a Ray cluster's nodes."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import ray
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from jointcredit.client.app import app as jointcredit_app

PLACEMENTS = "placements"


class RecordingApp(ClientApp):
    def __call__(self, message: Message, context: Context) -> Message:
        reply = jointcredit_app(message, context)
        record = {
            "partition": int(context.node_config["partition-id"]),
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "ppid": os.getppid(),
        }
        # out-dir is the run's staging directory; its parent outlives the run
        where = Path(str(context.run_config["out-dir"])).parent / PLACEMENTS
        where.mkdir(exist_ok=True)
        (where / f"{secrets.token_hex(8)}.json").write_text(json.dumps(record))
        return reply


app = RecordingApp()


def placements(directory: Path) -> list[dict[str, int | str]]:
    return [json.loads(p.read_text()) for p in sorted((directory / PLACEMENTS).glob("*.json"))]
