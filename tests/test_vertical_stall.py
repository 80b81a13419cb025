"""A feature party that stops answering in the middle of training: in a Flower simulation the
coordinator's grid delivers nothing more to the platform's node from its Nth training request
on (a node gone dead or stalled, as the coordinator sees it). The run ends within the step
timeout with an error naming the party, the step and what it was asked; no OUT (nor a
half-written model) is left; and the coordinator's abort reaches the label party, which drops
its session (its secrets, its training thread). On a deployed node the abort reaches the
session host the same way, and a message for a session it no longer holds is refused."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Message
from flwr.serverapp import Grid
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.federation import protocol
from jointcredit.federation import vertical as v
from jointcredit.server import vertical_app
from jointcredit.simulations import vertical as sim

pytestmark = pytest.mark.integration

# The run's step timeout (its settings'): the first step, hello, starts the Ray actors.
START_TIMEOUT = 30.0
# Seconds a training step may take, set on the relay once training starts (the actors are
# up): the stalled step's wait, which the error must name.
TIMEOUT = 10.0
STALL_AT = 4  # the platform's 4th training request is the first it never answers


class StallingGrid:
    """The run's grid, except that the feature party asked its `STALL_AT`th training request
    gets no message from then on (and so sends no reply)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.serves = 0
        self.dead: int | None = None
        self.stalled_at: tuple[int, str] | None = None  # (step, action) never answered
        self.undelivered: set[str] = set()

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids: list[str] = []
        for msg in messages:
            request = v.request(msg.content)
            if msg.metadata.message_type == v.SERVE and request[v.ACTION] != v.ABORT:
                self.serves += 1
                if self.serves == STALL_AT:
                    self.dead = msg.metadata.dst_node_id
                    step = protocol.server_round(msg.content)
                    self.stalled_at = (int(step or 0), str(request[v.ACTION]))
            if msg.metadata.dst_node_id == self.dead:
                ids.append(f"undelivered-{len(self.undelivered)}")
                self.undelivered.add(ids[-1])
            else:
                ids += list(self.grid.push_messages([msg]))
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        wanted = [i for i in ids if i not in self.undelivered]
        return list(self.grid.pull_messages(wanted)) if wanted else []


def test_a_silent_feature_party_ends_the_run_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grids: list[StallingGrid] = []
    aborted: list[list[str]] = []
    timeouts: list[float] = []  # the relay's, before the first training step
    push_and_pull = vertical_app.push_and_pull
    abort = vertical_app.Relay.abort
    send = vertical_app.Relay.send
    simulate = sim.simulate_vertical

    def stalling(grid: Any, sent: list[Message], timeout: float | None) -> Any:
        if not grids:
            grids.append(StallingGrid(grid))
        return push_and_pull(grids[0], sent, timeout)  # type: ignore[arg-type]

    def recorded_abort(self: vertical_app.Relay, label: str | None) -> list[str]:
        aborted.append(abort(self, label))
        return aborted[-1]

    def short_training_steps(
        self: vertical_app.Relay, node: int, kind: str, content: Any
    ) -> tuple[Message, str]:
        if kind == v.SERVE and not timeouts:
            timeouts.append(self.timeout)
            self.timeout = TIMEOUT
        return send(self, node, kind, content)

    def short_steps(settings: v.VerticalSettings, out: Path, **kw: Any) -> Any:
        return simulate(settings.model_copy(update={"timeout": START_TIMEOUT}), out, **kw)

    monkeypatch.setattr(vertical_app, "push_and_pull", stalling)
    monkeypatch.setattr(vertical_app.Relay, "abort", recorded_abort)
    monkeypatch.setattr(vertical_app.Relay, "send", short_training_steps)
    monkeypatch.setattr(sim, "simulate_vertical", short_steps)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["simulate", "--layout", "vertical", "--dataset", "synthetic-vertical",
         "--synthetic-rows", "400", "--trees", "3", "--max-depth", "2", "--out", str(out)],
        env={"COLUMNS": "300"},
    )  # fmt: skip
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    # The relay waited as long as the run's settings said until training started.
    assert timeouts == [START_TIMEOUT], output
    grid = grids[0]
    assert grid.stalled_at is not None, output
    step, action = grid.stalled_at
    assert (
        f"platform: no reply within {TIMEOUT:g} s to step {step} ({v.SERVE}, {action})" in output
    ), output
    assert re.search(r"simulation failed", output)
    # The label party confirmed the abort: its session was there, and is dropped.
    assert aborted == [["bank"]]
    # Nothing of the run is left: no OUT, no staging directory beside it.
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
