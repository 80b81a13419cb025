"""The coordinator's side of the hierarchical prior: sum what verifies, leave out the rest."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, RecordDict
from grid_helpers import AnsweringGrid

from jointcredit.federation import protocol
from jointcredit.federation.protocol import RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.server.grid import InstitutionGrid
from jointcredit.server.personalization import federation_prior

SHAPES = {"linear.weight": (1, 3), "linear.bias": (1,)}


def _deviation(weight: list[float], bias: float) -> ArrayRecord:
    return ArrayRecord(
        {
            "linear.weight": Array(np.array([weight], dtype=np.float64)),
            "linear.bias": Array(np.array([bias], dtype=np.float64)),
        }
    )


def _grid(answers: dict[int, tuple[str, ArrayRecord | None]]) -> InstitutionGrid:
    def answer(m: Message) -> RecordDict:
        inst, record = answers[m.metadata.dst_node_id]
        if record is None:
            return RecordDict({protocol.IDENTITY: protocol.identity_record(inst)})
        return protocol.prior_reply(inst, record)

    return InstitutionGrid(AnsweringGrid(answer, reverse=True))  # type: ignore[arg-type]


def _ask(grid: InstitutionGrid, nodes: list[int]) -> tuple[ArrayRecord, list[str]] | None:
    arrays = ArrayRecord({k: Array(np.zeros(s, dtype=np.float32)) for k, s in SHAPES.items()})
    return federation_prior(
        grid, nodes, arrays, SHAPES, RoundConfig(preprocessing="{}"), RunSettings()
    )


@pytest.mark.usefixtures("task_identity")
def test_prior_sums_usable_deviations_and_names_who_is_in_the_sum() -> None:
    answers = {
        1: ("zeta-bank", _deviation([1.0, 2.0, 3.0], 0.5)),
        2: ("alpha-bank", _deviation([0.5, 0.0, 1.0], 0.25)),
        3: ("neg-lender", _deviation([-1.0, 0.0, 0.0], 0.0)),  # not a squared deviation
        4: ("nan-lender", _deviation([np.nan, 0.0, 0.0], 0.0)),
        5: ("short-lender", ArrayRecord({"linear.weight": Array(np.zeros((1, 2)))})),
        6: ("silent-lender", None),
    }
    result = _ask(_grid(answers), list(answers))
    assert result is not None
    total, covered = result
    assert covered == ["alpha-bank", "zeta-bank"]  # sorted, only the usable ones
    assert total["linear.weight"].numpy().tolist() == [[1.5, 2.0, 4.0]]
    assert total["linear.bias"].numpy().tolist() == [0.75]


@pytest.mark.usefixtures("task_identity")
def test_fewer_than_two_usable_deviations_means_no_prior() -> None:
    answers = {
        1: ("zeta-bank", _deviation([1.0, 2.0, 3.0], 0.5)),
        2: ("alpha-bank", _deviation([np.inf, 0.0, 1.0], 0.25)),
    }
    assert _ask(_grid(answers), [1, 2]) is None
