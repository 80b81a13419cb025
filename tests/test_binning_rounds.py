"""The binning phase as messages: the real ClientApp answers `query.bin_grid` and
`query.bin_counts` with signed replies, the coordinator verifies them and agrees the bins; the
result is the table the same steps give on the institutions' rows and on the pooled rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Message, RecordDict
from grid_helpers import AnsweringGrid
from node_helpers import agreed_preprocessing, node_reply

from jointcredit.data.catalog import load_institution, resolve
from jointcredit.federation import protocol
from jointcredit.federation.protocol import BinningRecord, NodeConfig
from jointcredit.federation.settings import RunSettings
from jointcredit.models.binning import BinCounts, Classing, binning_from_rows
from jointcredit.models.preprocessing import CategoricalFeature
from jointcredit.server.binning import Binning, agree_binning
from jointcredit.server.errors import FederationError
from jointcredit.server.grid import InstitutionGrid
from jointcredit.server.verify import UpdateVerifier
from jointcredit.trust.keyset import create_key_set
from jointcredit.trust.store import TrustStore

SETTINGS = RunSettings.from_run_config(
    {"institutions": 3, "rounds": 1, "seed": 5, "model": "scorecard", "fine-bins": 16}
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
        if tamper == partition and msg.metadata.message_type == protocol.BIN_COUNTS_QUERY:
            del reply.content[protocol.BINNING]  # a relay changes what the node signed
            counts = BinCounts(goods={}, bads={})
            reply.content[protocol.BINNING] = BinningRecord(
                payload=counts.model_dump_json()
            ).to_record()
        return reply.content

    return AnsweringGrid(answer, nodes=NODES)


@pytest.mark.usefixtures("task_identity")
def test_the_federation_agrees_the_bins_the_rows_would_give(
    trust: tuple[TrustStore, Path],
) -> None:
    store, keys = trust
    verifier = UpdateVerifier(store, run_id=7)
    grid = InstitutionGrid(_node(keys), verifier)  # type: ignore[arg-type]
    schema, spec = agreed_preprocessing(grid, NODES)
    table = agree_binning(Binning(grid, NODES, SETTINGS, schema), spec)  # type: ignore[arg-type]
    assert [e.message_type for e in grid.exchanges[-2:]] == [
        protocol.BIN_GRID_QUERY,
        protocol.BIN_COUNTS_QUERY,
    ]
    assert all(len(e.accepted) == 3 and not e.rejected for e in grid.exchanges)
    ids = resolve(SETTINGS.data).ids[:3]
    parts = [load_institution(SETTINGS.data, i).train for i in ids]
    vocabularies = {
        f.name: f.categories
        for f in spec.features  # type: ignore[attr-defined]
        if isinstance(f, CategoricalFeature)
    }
    rows = [(p.x, p.y) for p in parts]
    classing = Classing(fine_bins=16, min_bin_share=SETTINGS.min_bin_share)
    assert binning_from_rows(rows, schema, vocabularies, classing) == table  # type: ignore[arg-type]
    pooled = (
        pd.concat([p.x for p in parts], ignore_index=True),
        np.concatenate([p.y for p in parts]),
    )
    assert binning_from_rows([pooled], schema, vocabularies, classing) == table  # type: ignore[arg-type]
    assert table.rows == sum(len(p.y) for p in parts)
    amounts = table.feature("gross_approved")
    assert 3 <= len(amounts.bins) <= 16 and amounts.iv > 0


@pytest.mark.usefixtures("task_identity")
def test_an_answer_changed_after_signing_stops_the_binning(
    trust: tuple[TrustStore, Path],
) -> None:
    store, keys = trust
    grid = InstitutionGrid(_node(keys, tamper=1), UpdateVerifier(store, run_id=7))  # type: ignore[arg-type]
    schema, spec = agreed_preprocessing(grid, NODES)
    inst = resolve(SETTINGS.data).ids[1]
    with pytest.raises(FederationError, match=rf"bin counts.*{inst}: tampered"):
        agree_binning(Binning(grid, NODES, SETTINGS, schema), spec)  # type: ignore[arg-type]


@pytest.mark.usefixtures("task_identity")
def test_unsigned_but_malformed_counts_are_refused_naming_the_institution(
    trust: tuple[TrustStore, Path],
) -> None:
    _, keys = trust
    grid = InstitutionGrid(_node(keys, tamper=2))  # type: ignore[arg-type]  # no verifier
    schema, spec = agreed_preprocessing(grid, NODES)
    inst = resolve(SETTINGS.data).ids[2]
    with pytest.raises(FederationError, match=rf"{inst}: unreadable bin counts"):
        agree_binning(Binning(grid, NODES, SETTINGS, schema), spec)  # type: ignore[arg-type]


@pytest.mark.usefixtures("task_identity")
def test_under_secagg_the_sums_of_masked_vectors_give_the_same_table(
    trust: tuple[TrustStore, Path],
) -> None:
    """The vectors each institution would mask (SecAgg+ itself: tests/test_scorecard_simulation)
    add up to the same histogram and counts as the plain replies."""
    from jointcredit.client.data import node_data
    from jointcredit.client.secagg import binning_counts

    _, keys = trust
    grid = InstitutionGrid(_node(keys))  # type: ignore[arg-type]
    schema, spec = agreed_preprocessing(grid, NODES)
    plain = agree_binning(Binning(grid, NODES, SETTINGS, schema), spec)  # type: ignore[arg-type]
    nodes = [
        node_data(NodeConfig(partition_id=p, num_partitions=3).values(), SETTINGS) for p in range(3)
    ]
    asked: list[int] = []

    def secure(length: int, config: dict[str, object]) -> np.ndarray:
        request = protocol.binning_sum_request(config)
        assert request is not None
        vectors = [binning_counts(request, node) for node in nodes]
        assert all(v.shape == (length,) for v in vectors)
        asked.append(length)
        return np.sum(vectors, axis=0)

    masked = agree_binning(Binning(grid, NODES, SETTINGS, schema, secure), spec)  # type: ignore[arg-type]
    assert masked == plain and len(asked) == 2
    assert protocol.binning_sum_request({"preprocessing": "{}"}) is None  # a training round
