"""`jointcredit promote`: the gates (each one refuses by name), the signed promotion record
beside the model, and that the model still verifies with it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from report_helpers import FAIRNESS, run_dir
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.models.gates import GATES, GatesError, check_gates, parse_gates, read_run
from jointcredit.models.promotion import PROMOTION, read_promotion
from jointcredit.trust.manifest import MANIFEST
from jointcredit.trust.store import load_store

PASSES = {
    "min_auc": 0.7,
    "max_gap_to_centralized": 0.03,
    "min_institution_auc": 0.65,
    "min_adverse_impact_ratio": 0.7,
    "max_mia_auc": 0.6,
    "max_rejected_replies": 0,
}
PASSING = "".join(f"{k} = {v}\n" for k, v in PASSES.items())

# One failing threshold per gate, on the sample run with the hand-made fairness block.
FAILING = {
    "min_auc": 0.9,
    "min_ks": 0.6,
    "max_brier": 0.1,
    "max_gap_to_centralized": 0.005,
    "min_institution_auc": 0.7,
    "min_adverse_impact_ratio": 0.8,
    "max_demographic_parity_difference": 0.1,
    "max_equal_opportunity_difference": 0.05,
    "max_mia_auc": 0.5,
    "max_epsilon": 8.0,
    "max_rejected_replies": -1,
}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_dir(tmp_path_factory.mktemp("promote"), fairness=FAIRNESS)


def _promote(out: Path, gates: str, tmp: Path) -> tuple[int, str]:
    path = tmp / "gates.toml"
    path.write_text(gates)
    key = out.parent / "keys" / "coordinator.key"
    result = CliRunner().invoke(
        app,
        ["promote", str(out / "model"), "--gates", str(path), "--key", str(key),
         "--trust-any-coordinator", "--by", "model risk committee"],
    )  # fmt: skip
    return result.exit_code, result.output


def test_every_gate_has_a_failing_case() -> None:
    assert set(FAILING) == set(GATES)


@pytest.mark.parametrize("gate", sorted(FAILING))
def test_promote_refuses_each_failed_gate_by_name(out: Path, tmp_path: Path, gate: str) -> None:
    gates = {**PASSES, gate: FAILING[gate]}
    code, output = _promote(out, "".join(f"{k} = {v}\n" for k, v in gates.items()), tmp_path)
    assert code == 1, output
    assert f"gate {gate} failed" in output
    refused = [line for line in output.splitlines() if line.startswith("refused")]
    assert len(refused) == 1, output  # only that gate
    assert not (out / "model" / PROMOTION).exists()


def test_a_gate_the_run_did_not_measure_fails(tmp_path: Path) -> None:
    bare = run_dir(tmp_path)  # no fairness block
    code, output = _promote(bare, "min_adverse_impact_ratio = 0.8\n", tmp_path)
    assert code == 1 and "gate min_adverse_impact_ratio failed: not measured" in output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_aucc = 0.7\n", "unknown gate 'min_aucc'"),
        ("min_auc = 'high'\n", "gate 'min_auc' must be a number"),
        ("min_auc = true\n", "gate 'min_auc' must be a number"),
        ("min_auc = \n", "not valid TOML"),
        ("", "names no gate"),
    ],
)
def test_a_bad_gates_file_is_refused_naming_the_key(
    out: Path, tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(GatesError, match=message):
        parse_gates(text)
    code, output = _promote(out, text, tmp_path)
    assert code == 2 and message in " ".join(output.split())


def test_promote_writes_a_signed_record_and_the_model_still_verifies(
    tmp_path: Path,
) -> None:
    run = run_dir(tmp_path, fairness=FAIRNESS)
    code, output = _promote(run, PASSING, tmp_path)
    assert code == 0, output
    trust = load_store(run / "trust.json")
    manifest_sha = hashlib.sha256((run / "model" / MANIFEST).read_bytes()).hexdigest()
    record = read_promotion(run / "model", trust, manifest_sha).record
    assert record["gates_toml"] == PASSING
    assert record["promoted_by"] == "model risk committee"
    assert {g["name"] for g in record["gates"]} == set(parse_gates(PASSING))
    assert all(g["passed"] and g["value"] is not None for g in record["gates"])
    verified = CliRunner().invoke(
        app, ["verify", str(run / "model"), "--trust", str(run / "trust.json"),
              "--trust-any-coordinator"]
    )  # fmt: skip
    assert verified.exit_code == 0, verified.output


def test_gate_values_come_from_the_run(out: Path) -> None:
    run = read_run(out / "metrics.json")
    results = {r.name: r for r in check_gates(run, {k: 0.0 for k in GATES})}
    m = json.loads((out / "metrics.json").read_text())
    assert results["min_auc"].value == m["federated"]["auc"]
    assert results["max_gap_to_centralized"].value == pytest.approx(
        m["centralized"]["auc"] - m["federated"]["auc"]
    )
    assert results["min_adverse_impact_ratio"].value == 0.72
    assert results["max_demographic_parity_difference"].value == pytest.approx(0.11)
    assert results["max_epsilon"].value == float("inf")  # no DP: unbounded


def test_a_difference_given_per_attribute_is_gated_too(tmp_path: Path) -> None:
    """A fairness figure written once per attribute (not per group) is still a figure."""
    block = {**FAIRNESS, "demographic_parity_difference": {"sex": -0.11}}
    run = read_run(run_dir(tmp_path, fairness=block) / "metrics.json")
    (result,) = check_gates(run, {"max_demographic_parity_difference": 0.1})
    assert (result.value, result.passed) == (pytest.approx(0.11), False)
    assert "(sex)" in result.detail


def test_figures_edited_after_signing_are_found() -> None:
    from jointcredit.models.gates import unsigned_differences

    manifest = {
        "metrics": {"federated": {"auc": 0.75, "ks": float("nan")}},
        "privacy": {"setting": "dp-record", "epsilon_spent": 1.9},
    }
    honest = {
        "federated": {"auc": 0.75, "ks": float("nan"), "evaluated_on": "institutions"},
        "privacy": {"setting": "dp-record", "epsilon_spent": 1.9, "delta": 1e-5},
        "centralized": {"auc": 0.76},
    }
    assert unsigned_differences(manifest, honest) == []
    edited = {**honest, "federated": {**honest["federated"], "auc": 0.99},
              "privacy": {**honest["privacy"], "epsilon_spent": 0.5}}  # fmt: skip
    assert unsigned_differences(manifest, edited) == [
        "federated.auc: signed 0.75, metrics.json 0.99",
        "privacy.epsilon_spent: signed 1.9, metrics.json 0.5",
    ]
    assert unsigned_differences(manifest, {"privacy": {}}) != []  # a signed figure removed
