"""The coordinator's side of the reference round: add up the counts that verify and read,
leave out and name the rest; under secagg, the secure sum of the query."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, RecordDict
from grid_helpers import AnsweringGrid

from jointcredit.federation import protocol
from jointcredit.federation.protocol import ReferenceRecord, RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import BinningSpec, CategoricalBins, NumericBins
from jointcredit.models.reference import vector_length
from jointcredit.server.grid import InstitutionGrid
from jointcredit.server.reference import reference_round

BINS = BinningSpec(
    features=[
        NumericBins(name="age", edges=[30.0]),  # below, above, missing
        CategoricalBins(name="kind", groups=[["a"], ["__other__"]]),  # a, other, missing
    ]
)


def _counts(rows: int) -> list[int]:
    return [rows] + [0] * 9 + [rows, 0, 0] + [0, rows, 0]


def _grid(answers: dict[int, tuple[str, object]]) -> InstitutionGrid:
    def answer(m: Message) -> RecordDict:
        inst, counts = answers[m.metadata.dst_node_id]
        assert m.metadata.message_type == protocol.REFERENCE_QUERY
        _, query = protocol.parse_reference_query(m.content)
        assert BinningSpec.model_validate_json(query.bins) == BINS
        if counts is None:
            return RecordDict({protocol.IDENTITY: protocol.identity_record(inst)})
        record = ReferenceRecord(counts=json.dumps(counts))
        return protocol.reference_reply(inst, record)

    return InstitutionGrid(AnsweringGrid(answer, reverse=True))  # type: ignore[arg-type]


@pytest.mark.usefixtures("task_identity")
def test_the_reference_sums_usable_counts_and_names_who_it_covers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert vector_length(BINS) == 16
    answers: dict[int, tuple[str, object]] = {
        1: ("zeta-bank", _counts(5)),
        2: ("alpha-bank", _counts(3)),
        3: ("short-lender", _counts(2)[:-1]),
        4: ("negative-lender", [-1, *_counts(1)[1:]]),
        5: ("float-lender", [1.5] + [0] * 15),
        6: ("silent-lender", None),
        # Its features count other rows than its score bands: left out, the run goes on.
        7: ("inconsistent-lender", [4] + [0] * 9 + [1, 0, 0] + [0, 4, 0]),
    }
    reference = reference_round(
        _grid(answers), list(answers), ArrayRecord(), RoundConfig(preprocessing="{}"), BINS,
        RunSettings(),
    )  # fmt: skip
    assert reference is not None
    assert reference.institutions == ["alpha-bank", "zeta-bank"] and reference.rows == 8
    assert reference.score_counts == [8] + [0] * 9
    assert reference.feature_counts == {"age": [8, 0, 0], "kind": [0, 8, 0]}
    left_out = [m for m in caplog.messages if "left out" in m or "missing" in m]
    assert len(left_out) == 5 and not any("alpha" in m or "zeta" in m for m in left_out)


@pytest.mark.usefixtures("task_identity")
def test_under_secagg_the_reference_is_the_secure_sum_of_the_query() -> None:
    asked: list[dict[str, object]] = []

    def secure(length: int, config: dict[str, object]) -> np.ndarray:
        asked.append(config)
        return np.array(_counts(7), dtype=np.int64)[:length]

    grid = _grid({})
    weights = ArrayRecord({"w": Array(np.array([1.5, -2.0]))})
    config = RoundConfig(preprocessing="{}")
    reference = reference_round(
        grid, [1, 2], weights, config, BINS, RunSettings(), secure, ["b-bank", "a-bank"]
    )
    assert reference is not None and reference.rows == 7 and not grid.exchanges
    assert reference.institutions == ["a-bank", "b-bank"]
    # The institution reads the model and the bins back from the fit config.
    back = protocol.reference_sum_request(asked[0])
    assert back is not None
    model, query = back
    assert model.arrays["w"].numpy().tolist() == [1.5, -2.0] and query.bins == BINS.to_json()
    assert protocol.binning_sum_request(asked[0]) is None
    assert protocol.tree_level_sum_request(asked[0]) is None


def test_under_secagg_without_a_secure_sum_no_counts_are_asked_for() -> None:
    grid = _grid({})
    settings = RunSettings.from_run_config({"privacy": "secagg", "institutions": 4})
    config = RoundConfig(preprocessing="{}")
    assert reference_round(grid, [1, 2], ArrayRecord(), config, BINS, settings) is None
    assert not grid.exchanges


@pytest.mark.usefixtures("task_identity")
def test_an_inconsistent_secure_sum_gives_no_reference_not_a_failed_run() -> None:
    def secure(length: int, config: dict[str, object]) -> np.ndarray:
        return np.array([4] + [0] * 9 + [1, 0, 0] + [0, 4, 0], dtype=np.int64)

    config = RoundConfig(preprocessing="{}")
    reference = reference_round(
        _grid({}), [1, 2], ArrayRecord(), config, BINS, RunSettings(), secure, ["a", "b"]
    )
    assert reference is None


@pytest.mark.parametrize("privacy", ["dp-record", "dp-institution"])
def test_a_dp_run_releases_no_exact_training_counts(privacy: str) -> None:
    grid = _grid({})
    settings = RunSettings.from_run_config({"privacy": privacy, "model": "logreg"})
    config = RoundConfig(preprocessing="{}")
    assert reference_round(grid, [1, 2], ArrayRecord(), config, BINS, settings) is None
    assert not grid.exchanges  # nothing asked
