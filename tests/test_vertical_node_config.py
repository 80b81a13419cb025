"""A deployed vertical node takes its trust store, signing key, data file and schema from its
own node config only: the run config is the coordinator's to set, so a key directory, trust
store or schema it names is never what a deployed node signs with, verifies against or reads.
A simulated node (partition ids only) still takes them from the run config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from vertical_helpers import deployed_node_config, hello_request

from jointcredit.client import vertical_app
from jointcredit.data.vertical_datasets import write_vertical_directory
from jointcredit.federation import protocol
from jointcredit.federation import vertical as v
from jointcredit.federation.protocol import ProtocolError
from jointcredit.trust.keyset import TRUST_FILE, create_key_set

RUN = 31


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vnode")
    data = write_vertical_directory("synthetic-vertical", root / "data", rows=200)
    create_key_set(root / "kit", ["bank", "platform"], federation="vnode-kit")
    create_key_set(root / "evil", ["bank", "platform"], federation="vnode-evil")
    return {"data": data, "kit": root / "kit", "evil": root / "evil"}


def _hello(paths: dict[str, Path], node: dict[str, str], **run: Any) -> vertical_app.Request:
    run_config = {"layout": "vertical", "parties": 2, "synthetic-rows": 200, **run}
    return hello_request(RUN, 5, run_config, node)


def _node(paths: dict[str, Path], *leave_out: str) -> dict[str, str]:
    data = paths["data"]
    full = deployed_node_config(
        paths["kit"], "bank", data / "bank" / "bank.parquet", data / "schema.toml"
    )
    return {k: x for k, x in full.items() if k not in leave_out}


@pytest.mark.parametrize(
    "missing",
    [
        protocol.SIGNING_KEY,
        protocol.NODE_TRUST_STORE,
        protocol.NODE_SCHEMA,
        protocol.DATA_FILE,
        protocol.STATE_DIR,
    ],
)
def test_a_deployed_node_takes_nothing_of_its_own_from_the_run_config(
    setup: dict[str, Path], missing: str
) -> None:
    evil = setup["evil"]
    req = _hello(
        setup, _node(setup, missing), **{"keys-dir": str(evil),
        "trust-file": str(evil / TRUST_FILE), "schema": str(setup["data"] / "schema.toml"),
        "out-dir": str(evil)},
    )  # fmt: skip
    with pytest.raises((ValueError, RuntimeError), match=f"needs {missing} in its node config"):
        vertical_app.handle(req)
    assert vertical_app.sessions() == []


def test_a_deployed_node_verifies_against_its_own_trust_store_and_writes_in_its_own_directory(
    setup: dict[str, Path],
) -> None:
    evil = setup["evil"]
    run = {"trust-file": str(evil / TRUST_FILE), "out-dir": str(evil)}
    req = _hello(setup, _node(setup), **run)
    try:
        vertical_app.handle(req)
        session = vertical_app._SESSIONS[req.key]
        assert session.trust.federation == "vnode-kit"
        assert session.settings.out_dir == str(setup["kit"] / "state" / "vertical" / str(RUN))
    finally:
        vertical_app.drop(req.key)


def test_a_failed_message_drops_the_session(setup: dict[str, Path]) -> None:
    """Its PSI scalar, rows (and for a label party its Paillier secret key and training
    thread) do not outlive the message that ended the run."""
    node = {protocol.PARTITION_ID: "1", protocol.NUM_PARTITIONS: "2"}  # the platform
    hello = _hello(setup, node, **{"keys-dir": str(setup["kit"])})
    vertical_app.handle(hello)
    assert vertical_app.sessions() == [hello.key]
    bad = vertical_app.Request(RUN, 5, v.SERVE, v.content(2, v.GRADIENTS), hello.run_config, node)
    with pytest.raises(ProtocolError, match="step and node"):
        vertical_app.handle(bad)
    assert vertical_app.sessions() == []
