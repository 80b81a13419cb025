"""`jointcredit simulate --layout vertical` end to end in a Flower simulation: the OUT contract
(metrics.json's sections, the signed model that `jointcredit verify` accepts, trust.json), the
federated model equal to the same learner on the joined rows (lossless over messages), no
message through the coordinator carrying an identifier, a hash of one or its unblinded curve
point, and bad input refused with exit 2."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.client.vertical_label import own_bins, tree_params
from jointcredit.federation.vertical import VerticalSettings
from jointcredit.models.reference import Reference, count_rows
from jointcredit.models.trees import train as central_train
from jointcredit.models.trees.bins import layout as bin_layout
from jointcredit.models.vertical.artifact import load_vertical_model
from jointcredit.models.vertical.model import LABEL_PARTY
from jointcredit.models.vertical.party_bins import joined_bins
from jointcredit.privacy import psi
from jointcredit.server import vertical_app
from jointcredit.simulations.vertical import aligned_frames, load_data
from jointcredit.trust.store import load_store

pytestmark = pytest.mark.integration

ARGS = ["--dataset", "synthetic-vertical", "--synthetic-rows", "400", "--trees", "3",
        "--max-depth", "3", "--seed", "5"]  # fmt: skip


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


@dataclass
class Run:
    out: Path
    exit_code: int
    output: str
    transcript: list[RecordDict]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    out = tmp_path_factory.mktemp("vertical") / "out"
    seen: list[RecordDict] = []
    send = vertical_app.Relay.send

    def recording(self: vertical_app.Relay, node: int, kind: str, content: RecordDict):  # type: ignore[no-untyped-def]
        seen.append(content)
        reply, party = send(self, node, kind, content)
        seen.append(reply.content)
        return reply, party

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vertical_app.Relay, "send", recording)
        code, output = _cli("simulate", "--layout", "vertical", *ARGS, "--out", str(out))
    yield Run(out, code, output, seen)


def test_the_out_contract(run: Run) -> None:
    assert run.exit_code == 0, run.output
    metrics = json.loads((run.out / "metrics.json").read_text())
    for section in ("federated", "centralized", "label_party_only"):
        assert 0.5 < metrics[section]["auc"] <= 1.0
    vert = metrics["vertical"]
    assert vert["parties"] == ["bank", "platform"]
    # 400 joined applicants; each party also holds some the other lacks.
    assert vert["intersection_size"] == 400
    assert vert["psi_seconds"] > 0 and vert["training_seconds"] > 0 and vert["bytes_sent"] > 0
    assert (run.out / "trust.json").is_file()
    code, output = _cli("verify", str(run.out / "model"), "--trust", str(run.out / "trust.json"))
    assert code == 0, output
    assert "platform: " in output and "signed by its own key" in output
    assert "bank is the label party its feature parties trained for (platform)" in output
    code, output = _cli(
        "verify", str(run.out / "model"), "--trust", str(run.out / "trust.json"), "--json"
    )
    facts = json.loads(output)
    assert code == 0 and facts["verified"] and facts["label_party"] == "bank"
    assert facts["label_party_splits"] + facts["parties"]["platform"]["splits"] > 0
    assert facts["parties"]["platform"]["names_label_party"] is True
    # A changed byte in the platform's part: verify fails, naming the file.
    splits = run.out / "model" / "parties" / "platform" / "splits.npz"
    data = splits.read_bytes()
    try:
        splits.write_bytes(data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])
        code, output = _cli(
            "verify", str(run.out / "model"), "--trust", str(run.out / "trust.json")
        )
        assert code == 1 and "splits.npz" in output
    finally:
        splits.write_bytes(data)


def assert_is_the_joined_rows_model(out: Path, settings: VerticalSettings) -> dict[str, int]:
    """The trees grown over Flower messages at `out` equal the central engine's on the
    joined rows with every party's own bins: same structure (each node's feature, threshold,
    missing, special and category sides, whichever party holds it), leaf values within 1e-9,
    same PDs. The number of nodes each feature party's splits make."""
    data = load_data(settings)
    schema = data.schema
    frames, test = aligned_frames(data, settings)
    model = load_vertical_model(out / "model", load_store(out / "trust.json"))
    # The joined columns: the label party's, then each feature party's by its index.
    by_index = sorted(model.parties, key=lambda p: model.parties[p].index)
    assert sorted(by_index) == sorted(p for p in schema.parties if p != schema.label_party)
    order = [schema.label_party, *by_index]
    bins = [own_bins(frames[p][~test], schema, p, settings) for p in order]
    offsets = np.cumsum([0, *[len(b.names) for b in bins]])
    codes = np.hstack(
        [b.codes(frames[p]).astype(np.int64) for b, p in zip(bins, order, strict=True)]
    )
    y = frames[schema.label_party][schema.base.label].to_numpy(dtype=float)
    central = central_train(
        codes[~test], y[~test], bin_layout(joined_bins(bins)), tree_params(settings)
    )

    held = dict.fromkeys(by_index, 0)
    assert len(model.label.ensemble.trees) == len(central.trees)
    for vt, ct in zip(model.label.ensemble.trees, central.trees, strict=True):
        assert np.array_equal(vt.left, ct.left) and np.array_equal(vt.right, ct.right)
        assert np.max(np.abs(vt.value - ct.value)) < 1e-9
        for n in np.flatnonzero(ct.feature >= 0).tolist():
            central_sides = (
                bool(ct.default_left[n]), int(ct.special_left[n]),
                np.flatnonzero(ct.category_left[n]).tolist(),
            )  # fmt: skip
            if vt.owner[n] == LABEL_PARTY:
                assert vt.split[n] == ct.feature[n] and vt.threshold[n] == ct.threshold[n]
                sides = (
                    bool(vt.default_left[n]), int(vt.special_left[n]),
                    np.flatnonzero(vt.category_left[n]).tolist(),
                )  # fmt: skip
            else:
                party = order[int(vt.owner[n])]
                held[party] += 1
                k = int(vt.split[n])
                table = model.parties[party].table
                assert offsets[int(vt.owner[n])] + table.feature[k] == ct.feature[n], (
                    f"node {n}: {party}'s split is not the central engine's feature"
                )
                assert table.threshold[k] == ct.threshold[n]
                sides = (
                    bool(table.default_left[k]), int(table.special_left[k]),
                    np.flatnonzero(table.category_left[k]).tolist(),
                )  # fmt: skip
            assert sides == central_sides, f"node {n}: missing, special or category sides"
    rows = {p: f[test] for p, f in frames.items()}
    federated = model.predict_pd(rows)
    assert np.max(np.abs(federated - central.predict_pd(codes[test]))) < 1e-9
    # Stability monitoring's reference: the held-out rows' scores and the bank's own bins.
    label_rows = rows[schema.label_party]
    expected = count_rows(model.label.card.score_scale.score(federated), label_rows, bins[0])
    assert model.label.reference is not None
    assert model.label.reference.rows == int(test.sum())
    assert model.label.reference == Reference.from_vector(expected, bins[0], [schema.label_party])
    # The feature parties' split thresholds are not in the label party's part.
    assert all(np.all(t.threshold[t.owner > LABEL_PARTY] == 0) for t in model.label.ensemble.trees)
    return held


def test_the_federated_model_is_the_joined_rows_model(run: Run) -> None:
    """Lossless over messages: the central engine's trees on the joined rows."""
    settings = VerticalSettings.model_validate(
        {"synthetic-rows": 400, "trees": 3, "max-depth": 3, "seed": 5}
    )
    held = assert_is_the_joined_rows_model(run.out, settings)
    assert held["platform"] > 0


def _blob(contents: list[RecordDict]) -> bytes:
    parts: list[bytes] = []
    for content in contents:
        for record in content.values():
            if isinstance(record, ArrayRecord):
                parts += [bytes(a.data) for a in record.values()]
            elif isinstance(record, ConfigRecord):
                for key, value in record.items():
                    parts.append(key.encode())
                    parts.append(value if isinstance(value, bytes) else repr(value).encode())
    return b"\x00".join(parts)


def _needles(ids: list[str]) -> list[bytes]:
    """An identifier in the clear, its common hashes (raw and hex) and its unblinded curve
    point: none may travel."""
    out: list[bytes] = []
    for ident in ids:
        raw = ident.encode()
        out.append(raw)
        for name in ("md5", "sha1", "sha256", "sha512", "sha3_256", "blake2b"):
            digest = hashlib.new(name, raw).digest()
            out += [digest, digest.hex().encode()]
    out += [
        bytes(p)
        for p in np.frombuffer(psi._hash_chunk([i.encode() for i in ids]), np.uint8).reshape(-1, 32)
    ]
    return out


def _carried(blob: bytes, needles: list[bytes]) -> bytes | None:
    by_prefix = {n[:8]: n for n in needles}
    for i in range(len(blob) - 7):
        found = by_prefix.get(blob[i : i + 8])
        if found is not None and blob.startswith(found, i):
            return found
    return None


def test_no_message_carries_an_identifier_or_its_hash(run: Run) -> None:
    assert run.exit_code == 0, run.output
    settings = VerticalSettings.model_validate({"synthetic-rows": 400, "seed": 5})
    data = load_data(settings)
    ids = sorted({i for d in data.parties.values() for i in d.frame["phone"].tolist()})
    needles = _needles(ids)
    blob = _blob(run.transcript)
    assert len(run.transcript) > 20 and len(blob) > 100_000
    assert _carried(blob, needles) is None
    # The check finds what it looks for: a sha256 of one identifier, hex, in a message.
    planted = blob[:1000] + hashlib.sha256(ids[7].encode()).hexdigest().encode() + blob[1000:]
    assert _carried(planted, needles) is not None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--dataset", "nope"], "unknown vertical dataset 'nope'"),
        (["--rounds", "3"], "not meaningful for --layout vertical: rounds"),
        (["--model", "mlp"], "--model mlp is not supported"),
        (
            ["--ray-address", "127.0.0.1:6379"],
            "not supported with --layout vertical: --ray-address",
        ),
        (["--max-depth", "9"], "max-depth"),
        (["--no-audit"], "not supported with --layout vertical: --no-audit"),
        (["--wide"], "not supported with --layout vertical: --wide"),
    ],
)
def test_bad_input_exits_2(args: list[str], named: str, tmp_path: Path) -> None:
    code, output = _cli("simulate", "--layout", "vertical", *args, "--out", str(tmp_path / "o"))
    assert code == 2, output
    assert named in " ".join(output.split())
    assert not (tmp_path / "o").exists()


TREES3, DEPTH3 = 2, 2


def test_three_parties_from_a_directory(tmp_path: Path) -> None:
    """A bank and two platforms from a bring-your-own directory: the rows all three hold are
    aligned (fewer than either platform shares with the bank), each platform's part signed by
    its own key, federated equal to centralized."""
    from jointcredit.data import synthetic_vertical as sv
    from jointcredit.data.vertical_schema import PartySpec, VerticalSchema

    frames = sv.generate(300, seed=2)
    platform = frames["platform"]
    pay_cols = list(sv.PLATFORM_FEATURES)[:5]
    shop_cols = list(sv.PLATFORM_FEATURES)[5:]
    shop = platform[["phone", *shop_cols]].iloc[40:]  # 40 fewer applicants than the other
    base = sv.vertical_schema()
    schema = VerticalSchema(
        base.base,
        {
            "bank": base.parties["bank"],
            "pay": PartySpec(features=tuple(pay_cols)),
            "shop": PartySpec(features=tuple(shop_cols)),
        },
    )
    data = tmp_path / "data"
    for party, frame in (("bank", frames["bank"]), ("pay", platform[["phone", *pay_cols]]),
                         ("shop", shop)):  # fmt: skip
        (data / party).mkdir(parents=True)
        frame.to_csv(data / party / f"{party}.csv", index=False)
    (data / "schema.toml").write_text(schema.to_toml(), encoding="utf-8")
    out = tmp_path / "out"
    code, output = _cli(
        "simulate", "--layout", "vertical", "--dataset", str(data), "--schema",
        str(data / "schema.toml"), "--trees", str(TREES3), "--max-depth", str(DEPTH3),
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    metrics = json.loads((out / "metrics.json").read_text())
    common = set(frames["bank"]["phone"]) & set(platform["phone"]) & set(shop["phone"])
    assert metrics["vertical"]["intersection_size"] == len(common)
    assert metrics["vertical"]["parties"] == ["bank", "pay", "shop"]
    assert abs(metrics["federated"]["auc"] - metrics["centralized"]["auc"]) < 1e-12
    code, output = _cli("verify", str(out / "model"), "--trust", str(out / "trust.json"))
    assert code == 0, output
    assert "pay: " in output and "shop: " in output
    # Not only the AUC: the trees are the central engine's on the rows all three hold, and
    # both platforms' splits are in them (dropping either one's histograms changes them).
    settings = VerticalSettings.model_validate(
        {"dataset": str(data), "schema": str(data / "schema.toml"), "trees": TREES3,
         "max-depth": DEPTH3}
    )  # fmt: skip
    held = assert_is_the_joined_rows_model(out, settings)
    assert held["pay"] > 0 and held["shop"] > 0, held
