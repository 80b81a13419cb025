"""fraction-train: which institutions train each round is drawn by Flower, reproducibly."""

from __future__ import annotations

import random
from types import SimpleNamespace

from flwr.app import RecordDict
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from grid_helpers import AnsweringGrid

from jointcredit.federation.choices import train_sample_size
from jointcredit.federation.settings import RunSettings
from jointcredit.server.grid import InstitutionGrid
from jointcredit.server.strategy import sampling


def _rounds(settings: RunSettings, node_ids: list[int], rounds: int = 3) -> list[list[str]]:
    """The institutions Flower samples to train in each round, nodes numbered `node_ids`."""
    names = {node: f"inst-{i:02d}" for i, node in enumerate(node_ids)}
    # the runtime lists nodes by their (random) ids, not by institution
    inner = AnsweringGrid(lambda _: RecordDict(), nodes=sorted(node_ids))
    grid = InstitutionGrid(inner, SimpleNamespace(node_institution=names))  # type: ignore[arg-type]
    size = sampling(settings, len(node_ids))["min_train_nodes"]
    return [sorted(names[n] for n in sample_nodes(grid, 0, size)[0]) for _ in range(rounds)]


def test_the_same_seed_trains_the_same_institutions_whatever_the_node_ids() -> None:
    settings = RunSettings.from_run_config({"fraction-train": 0.3, "seed": 5})
    first = _rounds(settings, random.Random(1).sample(range(1, 10**9), 10))
    again = _rounds(settings, random.Random(2).sample(range(1, 10**9), 10))
    assert first == again
    assert all(len(chosen) == 3 for chosen in first)
    assert len({tuple(chosen) for chosen in first}) > 1  # a new sample each round
    other_seed = _rounds(settings.replaced(seed=6), random.Random(1).sample(range(1, 10**9), 10))
    assert other_seed != first


def test_the_sample_is_the_share_rounded_up_and_at_least_one() -> None:
    assert train_sample_size(1.0, 7) == 7
    assert train_sample_size(0.1, 1000) == 100
    assert train_sample_size(0.1, 15) == 2
    assert train_sample_size(0.01, 20) == 1
    everyone = RunSettings.from_run_config({})
    assert sampling(everyone, 12) == {"fraction_train": 1.0, "min_train_nodes": 12}
