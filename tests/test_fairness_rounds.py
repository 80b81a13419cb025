"""The fairness rounds as messages: the real ClientApp answers `query.fairness_groups` and
`query.fairness_counts` with signed replies, the coordinator sums them into the figures the
pooled test rows give; an answer changed after signing leaves the run without figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, Context, Message, RecordDict
from grid_helpers import AnsweringGrid
from node_helpers import agreed_preprocessing, node_reply

from jointcredit.data.catalog import load_institution, resolve
from jointcredit.data.schema import Schema
from jointcredit.federation import protocol
from jointcredit.federation.protocol import RoundConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.models.fairness import centralized
from jointcredit.models.learners import architecture, build_model
from jointcredit.models.training import predict_pd
from jointcredit.server.fairness import cutoffs, measure_fairness
from jointcredit.server.grid import InstitutionGrid
from jointcredit.server.verify import UpdateVerifier
from jointcredit.trust.keyset import create_key_set
from jointcredit.trust.store import TrustStore

SETTINGS = RunSettings.from_run_config(
    {
        "dataset": "synthetic",
        "institutions": 3,
        "synthetic-rows": 400,
        "rounds": 1,
        "seed": 5,
        "model": "logreg",
    }
)
NODES = [100, 101, 102]


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrustStore, Path]:
    directory = tmp_path_factory.mktemp("keys")
    return create_key_set(directory, resolve(SETTINGS.data).ids, federation="test"), directory


def _node(keys: Path, tamper: int | None = None) -> AnsweringGrid:
    def answer(msg: Message) -> RecordDict:
        reply = node_reply(msg, SETTINGS, keys)
        partition = msg.metadata.dst_node_id - 100
        if tamper == partition and msg.metadata.message_type == protocol.FAIRNESS_COUNTS_QUERY:
            counts = protocol.parse_fairness_counts_reply(reply.content).copy()
            counts[0] += 1  # a relay changes what the node signed
            del reply.content[protocol.FAIRNESS_COUNTS]
            reply.content[protocol.FAIRNESS_COUNTS] = protocol.fairness_counts_reply("x", counts)[
                protocol.FAIRNESS_COUNTS
            ]
        return reply.content

    return AnsweringGrid(answer, nodes=NODES)


@pytest.mark.usefixtures("task_identity")
def test_the_coordinator_s_figures_are_the_pooled_rows(trust: tuple[TrustStore, Path]) -> None:
    store, keys = trust
    grid = InstitutionGrid(_node(keys), UpdateVerifier(store, run_id=7))  # type: ignore[arg-type]
    schema, spec = agreed_preprocessing(grid, NODES)
    model = build_model(architecture("logreg", spec.n_outputs), seed=3)
    config = RoundConfig(preprocessing=spec.to_json())
    arrays = ArrayRecord(model.state_dict())
    result, sum_grid = measure_fairness(
        grid,
        grid,
        Context(7, 0, {}, RecordDict(), {}),
        SETTINGS,
        schema,
        NODES,
        arrays,
        config,  # type: ignore[arg-type]
    )
    assert sum_grid is None and result is not None
    assert [e.message_type for e in grid.exchanges[-2:]] == [
        protocol.FAIRNESS_GROUPS_QUERY,
        protocol.FAIRNESS_COUNTS_QUERY,
    ]
    assert all(len(e.accepted) == 3 and not e.rejected for e in grid.exchanges)
    tests = [load_institution(SETTINGS.data, i).test for i in resolve(SETTINGS.data).ids]
    x = pd.concat([t.x for t in tests], ignore_index=True)
    groups = pd.concat([t.groups for t in tests], ignore_index=True)
    y = np.concatenate([t.y for t in tests])
    pd_ = predict_pd(model, spec.transform(x))
    assert result == centralized(pd_, y, groups, schema.protected, cutoffs(SETTINGS))


@pytest.mark.usefixtures("task_identity")
def test_counts_changed_after_signing_leave_no_figures(trust: tuple[TrustStore, Path]) -> None:
    store, keys = trust
    grid = InstitutionGrid(_node(keys, tamper=1), UpdateVerifier(store, run_id=7))  # type: ignore[arg-type]
    schema, spec = agreed_preprocessing(grid, NODES)
    model = build_model(architecture("logreg", spec.n_outputs), seed=3)
    result, _ = measure_fairness(
        grid,  # type: ignore[arg-type]
        grid,
        Context(7, 0, {}, RecordDict(), {}),
        SETTINGS,
        schema,
        NODES,
        ArrayRecord(model.state_dict()),
        RoundConfig(preprocessing=spec.to_json()),
    )
    assert result is None
    inst = resolve(SETTINGS.data).ids[1]
    assert grid.exchanges[-1].rejected[inst].startswith("tampered")


def test_no_protected_attribute_or_turned_off_asks_nothing() -> None:
    grid = InstitutionGrid(AnsweringGrid(lambda m: RecordDict(), nodes=NODES))  # type: ignore[arg-type]
    plain = Schema.model_validate({"label": "y", "positive": 1, "features": {"a": "numeric"}})
    protected = plain.model_copy(update={"protected": ("sex",)})
    off = SETTINGS.replaced(fairness=False)
    for schema, settings in ((plain, SETTINGS), (protected, off)):
        args = (grid, grid, Context(7, 0, {}, RecordDict(), {}), settings, schema, NODES)
        assert measure_fairness(*args, ArrayRecord(), RoundConfig(preprocessing="{}")) == (  # type: ignore[arg-type]
            None,
            None,
        )
    assert grid.exchanges == []


@pytest.mark.usefixtures("task_identity")
def test_an_impossible_secure_sum_leaves_no_figures_not_a_failed_run(
    trust: tuple[TrustStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under secagg a masked input can make the sum hold a negative count: the run goes on
    without the fairness section."""
    store, keys = trust
    grid = InstitutionGrid(_node(keys), UpdateVerifier(store, run_id=7))  # type: ignore[arg-type]
    schema, spec = agreed_preprocessing(grid, NODES)
    model = build_model(architecture("logreg", spec.n_outputs), seed=3)

    def impossible(*args: object, **kwargs: object) -> np.ndarray:
        length = args[3]
        assert isinstance(length, int)
        return np.full(length, -1, dtype=np.int64)

    monkeypatch.setattr("jointcredit.server.fairness.secure_sum", impossible)
    result, sum_grid = measure_fairness(
        grid,  # type: ignore[arg-type]
        grid,
        Context(7, 0, {}, RecordDict(), {}),
        SETTINGS.replaced(privacy="secagg"),
        schema,
        NODES,
        ArrayRecord(model.state_dict()),
        RoundConfig(preprocessing=spec.to_json()),
    )
    assert result is None and sum_grid is not None
