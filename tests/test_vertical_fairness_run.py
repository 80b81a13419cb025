"""A whole vertical run with the bank's protected attributes, in process: the coordinator's
ServerApp against a Grid whose two nodes answer through the vertical ClientApp itself (signed
replies, their sessions in this process), every message recorded as bytes.

The protected column's name and its groups (distinctive strings, which no ciphertext or
digest will contain by chance) appear in no message to or from the platform and in no file
of either part of the model; they reach the coordinator only as the figures of the bank's
`done` reply, which equal `models.fairness` on the joined held-out rows scored by the
verified model, and fairlearn's MetricFrame on the same decisions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, demographic_parity_difference, selection_rate
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.client import vertical_app
from jointcredit.data.vertical_datasets import load_vertical_dataset, write_vertical_directory
from jointcredit.federation.fairness import Fairness
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.federation.vertical_fairness import cutoffs
from jointcredit.models.fairness import centralized, scores_of
from jointcredit.models.vertical.artifact import MODEL_DIR, load_vertical_model
from jointcredit.server import vertical_app as server
from jointcredit.simulations.vertical import aligned_frames
from jointcredit.trust.keyset import TRUST_FILE, create_key_set
from jointcredit.trust.store import load_store

RUN = 91
BANK, PLATFORM = 7, 8
COLUMN = "kyc_sex_q8x"
GROUPS = {"female": "GROUP-FEMALE-9c1f2a", "male": "GROUP-MALE-4b7d0e"}
SECRETS = [COLUMN.encode(), *(g.encode() for g in GROUPS.values())]


def content_bytes(content: RecordDict) -> bytes:
    """Everything a message carries: every array's bytes, every config key and value."""
    out = []
    for name, record in content.items():
        out.append(name.encode())
        if isinstance(record, ArrayRecord):
            out += [k.encode() + bytes(a.data) for k, a in record.items()]
        elif isinstance(record, ConfigRecord):
            out += [f"{k}={x!r}".encode() for k, x in record.items()]
    return b"\x00".join(out)


class BothNodesGrid:
    """Each node answers through the vertical ClientApp as the message is pushed."""

    def __init__(self, run_config: dict[str, object]) -> None:
        self.run_config = run_config
        self.to_node: dict[int, list[bytes]] = {BANK: [], PLATFORM: []}
        self.from_node: dict[int, list[bytes]] = {BANK: [], PLATFORM: []}
        self._replies: dict[str, Message] = {}
        self._count = 0

    def get_node_ids(self) -> list[int]:
        return [BANK, PLATFORM]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for m in messages:
            node = m.metadata.dst_node_id
            self._count += 1
            message_id = f"{self._count}-{node}"
            m.metadata.__dict__["_message_id"] = message_id
            m.metadata.__dict__["_run_id"] = RUN
            self.to_node[node].append(content_bytes(m.content))
            partition = {"partition-id": 0 if node == BANK else 1, "num-partitions": 2}
            context = Context(RUN, node, partition, RecordDict(), dict(self.run_config))
            reply = vertical_app.app(m, context)
            reply.metadata.__dict__["_src_node_id"] = node
            if reply.has_content():
                self.from_node[node].append(content_bytes(reply.content))
            self._replies[message_id] = reply
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """synthetic-vertical with the bank's `sex` renamed and its groups made distinctive."""
    root = write_vertical_directory(
        "synthetic-vertical", tmp_path_factory.mktemp("fair") / "data", rows=600
    )
    bank = root / "bank" / "bank.parquet"
    frame = pd.read_parquet(bank)
    frame[COLUMN] = frame.pop("sex").map(GROUPS)
    frame.to_parquet(bank, index=False)
    schema = root / "schema.toml"
    text = schema.read_text()
    assert '"sex"' in text
    schema.write_text(text.replace('"sex"', f'"{COLUMN}"'))
    return root


@pytest.fixture
def run_config(tmp_path: Path, dataset: Path) -> Iterator[dict[str, object]]:
    keys_dir = tmp_path / "keys"
    create_key_set(keys_dir, ["bank", "platform"], federation="fairness-test")
    settings = VerticalSettings.model_validate(
        {"dataset": str(dataset), "trees": 4, "max-depth": 2, "tree-learning-rate": 0.5,
         "fairness-approve": 640, "fairness-decline": 560, "keys-dir": str(keys_dir),
         "trust-file": str(keys_dir / TRUST_FILE), "out-dir": str(tmp_path / "out"),
         "parties": 2, "timeout": 60.0}
    )  # fmt: skip
    yield dict(settings.to_run_config())
    for key in vertical_app.sessions():
        vertical_app.drop(key, "test over")


@pytest.mark.usefixtures("task_identity")
def test_the_banks_groups_leave_only_as_figures_equal_to_the_joined_rows(
    run_config: dict[str, object],
) -> None:
    grid = BothNodesGrid(run_config)
    settings = VerticalSettings.of(dict(run_config), RUN)
    server._run(grid, Context(RUN, 0, {}, RecordDict(), dict(run_config)), settings)  # type: ignore[arg-type]

    # Nothing of the protected column to or from the platform, in either part of the model.
    platform_bytes = b"".join(grid.to_node[PLATFORM] + grid.from_node[PLATFORM])
    assert len(grid.to_node[PLATFORM]) > 5 and len(platform_bytes) > 10_000
    model = Path(settings.out_dir) / MODEL_DIR
    files = [p for p in model.rglob("*") if p.is_file()]
    assert any("parties" in p.parts for p in files)  # the platform's part is there
    for secret in SECRETS:
        assert secret not in platform_bytes
        for path in files:
            assert secret not in path.read_bytes(), path
    # ... nor in anything the bank sent but its `done` reply's figures.
    *before, done = grid.from_node[BANK]
    assert all(secret not in b for b in before for secret in SECRETS)
    assert all(secret in done for secret in SECRETS[1:])

    result = json.loads((Path(settings.out_dir) / server.RESULT).read_bytes())
    federated = Fairness.model_validate(result["fairness"])
    assert federated.attributes == [COLUMN, "age_band"]

    # The same figures from the joined held-out rows, scored by the verified model.
    data = load_vertical_dataset(str(settings.dataset))
    frames, test = aligned_frames(data, settings)
    scorer = load_vertical_model(model, load_store(Path(settings.trust_file)))
    pd_ = scorer.predict_pd({p: f[test].reset_index(drop=True) for p, f in frames.items()})
    bank = data.label_party
    assert bank.groups is not None
    at = pd.Series(np.arange(len(bank.frame)), index=bank.frame[data.schema.id].to_numpy())
    rows = at.loc[frames["bank"][data.schema.id].to_numpy()].to_numpy()[test]
    groups = bank.groups.iloc[rows].reset_index(drop=True)
    y = frames["bank"]["defaulted"].to_numpy()[test]
    assert federated == centralized(pd_, y, groups, data.schema.protected, cutoffs(settings))

    # fairlearn on the same decisions: approval rates per group, their spread.
    approved = (scores_of(pd_) >= settings.fairness_approve).astype(int)
    assert 0 < approved.mean() < 1  # the cut-offs leave both decisions to compare
    for name in data.schema.protected:
        frame = MetricFrame(
            metrics=selection_rate, y_true=y, y_pred=approved, sensitive_features=groups[name]
        )
        for group, rate in frame.by_group.items():
            assert federated.groups[name][str(group)].approval_rate == pytest.approx(rate)
        assert federated.demographic_parity_difference[name] == pytest.approx(
            demographic_parity_difference(y, approved, sensitive_features=groups[name])
        )
        repaid = y == 0
        eo = MetricFrame(
            metrics=selection_rate, y_true=y[repaid], y_pred=approved[repaid],
            sensitive_features=groups[name][repaid],
        )  # fmt: skip
        assert federated.equal_opportunity_difference[name] == pytest.approx(eo.difference())


@pytest.mark.integration
@pytest.mark.parametrize(
    "model",
    [["--trees", "4", "--max-depth", "2"], ["--model", "scorecard"]],
    ids=["trees", "scorecard"],
)
def test_simulate_writes_the_horizontal_runs_fairness_key_and_the_baselines(
    tmp_path: Path, model: list[str]
) -> None:
    out = tmp_path / "out"
    args = ["simulate", "--layout", "vertical", "--dataset", "synthetic-vertical",
            "--synthetic-rows", "1500", *model,
            "--fairness-approve", "620", "--fairness-decline", "560",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Fairness on the bank's held-out aligned rows" in result.output
    metrics = json.loads((out / "metrics.json").read_bytes())
    federated = Fairness.model_validate(metrics["fairness"])  # the horizontal run's shape
    assert federated.attributes == ["sex", "age_band"]
    assert (federated.cutoffs.approve, federated.cutoffs.decline) == (620, 560)
    baselines = metrics["fairness_baselines"]
    assert set(baselines) == {"centralized", "label_party_only"}
    # Lossless (trees or scorecard): the joined rows' model decides every held-out applicant alike.
    assert Fairness.model_validate(baselines["centralized"]) == federated
    own = Fairness.model_validate(baselines["label_party_only"])
    assert own.attributes == federated.attributes and own != federated
    n = sum(c.applicants for c in federated.groups["sex"].values())
    assert n == metrics["federated"]["test-rows"]
