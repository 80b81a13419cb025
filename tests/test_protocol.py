"""The wire protocol is spelled in one module: its records round-trip, and no other module
writes one of its names as a string."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from jointcredit.federation import protocol
from jointcredit.federation.protocol import (
    BinCountsQuery,
    BinGridQuery,
    BinningRecord,
    EvaluateMetrics,
    HistogramMetrics,
    ModelMessage,
    NodeConfig,
    ProtocolError,
    RoundConfig,
    SummaryQuery,
    SummaryRecord,
    TrainMetrics,
    TreeLevelConfig,
    TreeLevelMessage,
    TreeRunState,
)

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("client", "server", "models", "privacy", "simulations", "cli", "deploy", "data",
         "trust", "federation", "service")  # fmt: skip
# Where the names are defined: the federation part (the protocol, and the run settings whose
# keys Flower's strategies reuse, e.g. proximal-mu), and the signature/identity records.
DEFINED = {*(ROOT / "federation").rglob("*.py"), ROOT / "trust" / "updates.py"}
# The two sides of the wire (and the privacy code they run): there even a plain word such as
# "metrics" or "institution", used as a key, would be a record or key spelled by hand.
WIRE_SIDES = ("client", "server", "privacy")
RECORD_MODELS = (
    SummaryQuery,
    BinGridQuery,
    BinCountsQuery,
    BinningRecord,
    SummaryRecord,
    RoundConfig,
    TrainMetrics,
    EvaluateMetrics,
    NodeConfig,
    TreeLevelConfig,
    HistogramMetrics,
    TreeRunState,
)


def protocol_names() -> set[str]:
    names = {
        v
        for k, v in vars(protocol).items()
        if k.isupper() and isinstance(v, str) and not k.startswith("_")
    }
    for model in RECORD_MODELS:
        names |= {field.alias or name for name, field in model.model_fields.items()}
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                ids.add(id(value))
    return ids


def _keys(tree: ast.AST) -> set[int]:
    """String constants used as a key: `x["k"]`, `x.get("k")`, `{"k": v}`, `"k" in x`."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            ids.add(id(node.slice))
        elif isinstance(node, ast.Dict):
            ids.update(id(k) for k in node.keys if k is not None)
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            ids.add(id(node.left))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault")
            and node.args
        ):
            ids.add(id(node.args[0]))
    return ids


def literals(path: Path, *, keys_only: bool = False) -> list[tuple[int, str]]:
    """The string constants of a module, docstrings left out (with `keys_only`: as keys)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    keys = _keys(tree) if keys_only else None
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and (keys is None or id(node) in keys)
    ]


def test_the_names_are_collected() -> None:
    names = protocol_names()
    assert {"server-round", "num-examples", "query.prior", "arrays", "auc"} <= names
    assert "prior-deviation" in names and "partition-id" in names
    assert {"query.bin_grid", "query.bin_counts", "grid-digits", "bins-json"} <= names


def test_no_protocol_name_is_spelled_outside_the_protocol_module() -> None:
    names = protocol_names()
    distinctive = {n for n in names if not n.isalpha()}  # e.g. server-round, query.prior
    found: list[str] = []
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            if path in DEFINED:
                continue
            for line, text in literals(path):
                if text in distinctive:
                    found.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
            if part in WIRE_SIDES:
                for line, text in literals(path, keys_only=True):
                    if text in names and text not in distinctive:
                        found.append(f"{path.relative_to(ROOT)}:{line}: {text!r} as a key")
    assert not found, "spell these through jointcredit.federation.protocol:\n" + "\n".join(found)


def keyed(path: Path) -> set[tuple[int, str]]:
    return set(literals(path, keys_only=True))


def test_the_check_finds_a_hand_spelled_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""server-round in a docstring is fine."""\n'
        'ROUND = config["server-round"]\n'
        'm = reply.content.get("metrics")\n'
        'log("metrics")\n'
    )
    assert (2, "server-round") in literals(bad)
    assert all(text != "server-round" or line == 2 for line, text in literals(bad))
    assert keyed(bad) == {(2, "server-round"), (3, "metrics")}  # a call argument is no key


def test_model_message_round_trips() -> None:
    arrays = ArrayRecord({"w": Array(np.ones(3))})
    prior = ArrayRecord({"w": Array(np.zeros(3))})
    config = RoundConfig(preprocessing="{}", server_round=4, finetune_epochs=2, prior_count=3)
    back = ModelMessage.from_content(ModelMessage(arrays, config, prior).to_content())
    assert back.config == config and back.prior is not None
    assert protocol.server_round(ModelMessage(arrays, config).to_content()) == 4
    with pytest.raises(ProtocolError, match="arrays and config"):
        ModelMessage.from_content(RecordDict({}))


def test_replies_round_trip_and_unknown_keys_are_refused() -> None:
    metrics = TrainMetrics(num_examples=10, train_loss=0.5, dp_epsilon=-1.0, dp_steps=0.0)
    content = protocol.train_reply("bank-a", metrics, None)
    assert protocol.claimed_institution(content) == "bank-a"
    assert TrainMetrics.parse(protocol.numbers(content)) == metrics
    assert protocol.withheld(content) and metrics.withheld and metrics.epsilon is None
    evaluated = EvaluateMetrics(num_examples=5, auc=math.nan, ks=0.1, brier=0.2)
    parsed = EvaluateMetrics.parse(protocol.numbers(protocol.evaluate_reply("b", evaluated)))
    assert math.isnan(parsed.auc) and parsed.ks == 0.1
    with pytest.raises(ProtocolError, match="gradient-norm: Extra inputs"):
        TrainMetrics.parse({**metrics.values(), "gradient-norm": 3.0})
    # a SuperNode's other keys are the operator's; a misspelt data-file is caught where the
    # node finds neither a file nor a partition
    assert NodeConfig.parse({"data-fil": "/srv/x.csv"}, "node config").data_file is None
    with pytest.raises(ProtocolError, match="node config: partition-id"):
        NodeConfig.parse({"partition-id": "three"}, "node config")
    with pytest.raises(ProtocolError, match="num-examples: Field required"):
        EvaluateMetrics.parse({"auc": 0.5, "ks": 0.1, "brier": 0.2})
    record = SummaryRecord(summary="{}", data_schema="{}")
    assert protocol.parse_summary_reply(protocol.summary_reply("b", record)) == record


def test_tree_level_message_round_trips_and_needs_its_tree() -> None:
    config = TreeLevelConfig(
        server_round=3, tree=0, level=2, ensemble="ab", bins_digest="cd", base_margin=-1.5
    )
    tree = ArrayRecord({"feature": Array(np.array([-1], dtype=np.int32))})
    back = TreeLevelMessage.from_content(TreeLevelMessage(config, tree).to_content())
    assert back.config == config and back.previous is None
    assert protocol.server_round(TreeLevelMessage(config, tree).to_content()) == 3
    with pytest.raises(ProtocolError, match="tree and config"):
        TreeLevelMessage.from_content(RecordDict({}))
    metrics = HistogramMetrics(num_examples=10, histogram_seconds=0.01)
    reply = protocol.histogram_reply("bank-a", ArrayRecord(), metrics)
    assert HistogramMetrics.parse(protocol.numbers(reply)) == metrics
    protocol.check_metrics(protocol.HISTOGRAMS_TRAIN, reply)
    with pytest.raises(ProtocolError, match="histogram-seconds"):
        protocol.check_metrics(protocol.HISTOGRAMS_TRAIN, protocol.evaluate_reply("b", _eval()))


def test_a_tree_level_travels_as_a_secagg_fit_config_and_back() -> None:
    """Under secagg a level's request is a legacy fit config (scalars and bytes): the same
    config and arrays come back; a key it does not know, or no tree, is refused."""
    config = TreeLevelConfig(server_round=4, tree=1, level=0, ensemble="ab", bins_digest="cd")
    tree = ArrayRecord({"nodes": Array(np.arange(6, dtype=np.int64).reshape(2, 3))})
    previous = ArrayRecord({"values": Array(np.array([0.5, -0.25]))})
    fit = protocol.tree_level_sum_config(TreeLevelMessage(config, tree, previous))
    assert all(isinstance(v, str | int | float | bytes) for v in fit.values())
    back = protocol.tree_level_sum_request(fit)
    assert back is not None and back.config == config and back.previous is not None
    assert back.tree["nodes"].numpy().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert back.previous["values"].numpy().tolist() == [0.5, -0.25]
    assert protocol.server_round(RecordDict({protocol.LEGACY_CONFIG: ConfigRecord(fit)})) == 4
    assert protocol.tree_level_sum_request({protocol.GRID_DIGITS: 3}) is None  # a binning sum
    prefix = protocol.TREE_LEVEL_SUM_PREFIX
    with pytest.raises(ProtocolError, match="unexpected key"):
        protocol.tree_level_sum_request({**fit, f"{prefix}other/x": b""})
    without_tree = {k: v for k, v in fit.items() if not k.startswith(f"{prefix}tree/")}
    with pytest.raises(ProtocolError, match="no tree"):
        protocol.tree_level_sum_request(without_tree)


def _eval() -> EvaluateMetrics:
    return EvaluateMetrics(num_examples=5, auc=0.5, ks=0.1, brier=0.2)
