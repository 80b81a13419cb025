"""Real Flower simulations (Ray backend): short, but the whole path end to end."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from jointcredit.data.catalog import load_federation
from jointcredit.federation.metrics import RunMetrics
from jointcredit.federation.settings import RunSettings
from jointcredit.models.artifact import load_artifact
from jointcredit.models.reference import Reference, count_rows, reference_bins
from jointcredit.simulations.simulate import simulate as run_simulation
from jointcredit.trust.store import load_store

pytestmark = pytest.mark.integration


def _settings(out: Path, **extra: Any) -> RunSettings:
    return RunSettings.from_run_config(
        {
            "dataset": "sba",
            "institutions": 4,
            "rounds": 3,
            "seed": 11,
            "out-dir": str(out),
            "finetune-epochs": 1,
            **extra,
        }
    )


def simulate(settings: RunSettings, **options: Any) -> dict[str, Any]:
    """metrics.json as written (the JSON contract), checked to round-trip through RunMetrics."""
    metrics = run_simulation(settings, **options).as_json()
    on_disk = json.loads((Path(settings.out_dir) / "metrics.json").read_text())
    assert on_disk == metrics
    assert RunMetrics.read(Path(settings.out_dir) / "metrics.json").as_json() == on_disk
    return metrics


# What the coordinator (the ServerApp, in this process) logged during the module's run.
_LOGGED: list[str] = []


class _Lines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _LOGGED.append(record.getMessage())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("sim") / "out"
    handler, flwr_log = _Lines(logging.INFO), logging.getLogger("flwr")
    # An earlier test in this process (a quiet CLI run) may have left Flower's logger quieter.
    level = flwr_log.level
    flwr_log.setLevel(logging.INFO)
    flwr_log.addHandler(handler)
    try:
        return out, simulate(_settings(out))
    finally:
        flwr_log.removeHandler(handler)
        flwr_log.setLevel(level)


def test_the_log_names_the_spec_by_digest_and_size(run: tuple[Path, dict[str, Any]]) -> None:
    """The agreed preprocessing (kilobytes of JSON in every message's config) is logged as its
    digest and size; no line carries it (Flower's `Strategy.start` logged the whole train
    config, spec included, in lines of over 4,000 characters)."""
    _, metrics = run
    digest = metrics["preprocessing"]["sha256"]
    agreed = [line for line in _LOGGED if line.startswith("Agreed preprocessing")]
    assert len(agreed) == 1 and f"sha256 {digest[:16]}" in agreed[0], agreed
    assert "bytes" in agreed[0]
    assert all(len(line) < 1000 for line in _LOGGED), max(_LOGGED, key=len)[:300]
    assert not [line for line in _LOGGED if '"features"' in line or "preprocessing'" in line]


def test_outputs_follow_the_contract(run: tuple[Path, dict[str, Any]]) -> None:
    out, metrics = run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    for key in ("auc", "ks", "brier"):
        assert 0 <= metrics["federated"][key] <= 1
        assert 0 <= metrics["centralized"][key] <= 1
    assert set(metrics["local_only"]) >= {"mean_auc", "per_institution"}
    assert len(metrics["institutions"]) == 4
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3]
    for r in metrics["rounds"]:
        assert r["errors"] == {} and len(r["train_institutions"]) == 4
        assert len(r["per_institution_auc"]) == 4 and "central" in r
    for inst in metrics["institutions"]:
        row = metrics["per_institution"][inst]
        assert row["auc"] > 0.5 and row["auc_local_only"] > 0.5 and row["auc_personalized"] > 0.5
        assert "personalized_mu" not in row  # Ditto's strength: not chosen here
    assert metrics["personalization"] == {
        "method": "hierarchical",
        "prior_institutions": metrics["institutions"],
        "ditto_institutions": [],
    }
    assert metrics["config"]["rounds"] == 3
    trust = load_store(out / "trust.json")
    model = load_artifact(out / "model", trust)
    assert model.card.institutions == metrics["institutions"]
    # The signed card records how the model was trained, not where this machine kept the
    # run's output and keys (a staging directory, a temporary key directory).
    assert model.card.training["rounds"] == 3
    assert not {"out-dir", "keys-dir", "trust-file", "coordinator-key"} & set(model.card.training)
    assert str(out.parent) not in json.dumps(model.card.training)


def test_every_reply_verified_and_the_model_signed(run: tuple[Path, dict[str, Any]]) -> None:
    out, metrics = run
    security = metrics["security"]
    # 4 institutions: query + 3 train + 3 evaluate + the personalisation prior's query + the
    # personalisation round, which also brings the reference's counts (no round of its own).
    assert security["verified_replies"] == 4 * 9 and security["rejected_replies"] == 0
    trust = load_store(out / "trust.json")
    assert security["trust_store_sha256"] == trust.digest()
    assert sorted(trust.institutions) == metrics["institutions"]
    final = load_artifact(out / "model", trust)
    manifest = final.verified.manifest
    assert manifest["round"] == 3 and manifest["privacy"]["setting"] == "none"
    assert final.stage == "final" and final.run_id is not None
    assert [u["round"] for u in manifest["updates"]] == [1, 2, 3]
    assert all(sorted(u["accepted"]) == metrics["institutions"] for u in manifest["updates"])
    # The reference counts came with the final evaluation, from every institution.
    assert final.reference is not None and final.reference.institutions == metrics["institutions"]
    for r in (1, 2, 3):  # each round's checkpoint is a signed artifact of its own
        checkpoint = load_artifact(out / "checkpoints" / f"round-{r:03d}", trust)
        assert checkpoint.verified.manifest["round"] == r
        assert (checkpoint.stage, checkpoint.run_id) == ("checkpoint", final.run_id)
    assert not any(p.suffix == ".key" for p in out.rglob("*"))  # no private key left in OUT


def test_the_artifact_carries_the_federations_reference_distribution(
    run: tuple[Path, dict[str, Any]],
) -> None:
    """The summed reference counts are the pooled training rows' under the final model."""
    out, metrics = run
    model = load_artifact(out / "model", load_store(out / "trust.json"))
    assert model.reference is not None and "reference.json" in model.verified.manifest["files"]
    pooled = load_federation(_settings(out).data).pooled_train().x
    bins = reference_bins(model.spec, model.binning, model.bins)
    expected = Reference.from_vector(
        count_rows(model.score(pooled), pooled, bins), bins, metrics["institutions"]
    )
    assert model.reference == expected and model.reference.rows == len(pooled)


def test_malicious_institutions_are_rejected_and_the_run_completes(tmp_path: Path) -> None:
    from jointcredit.data.catalog import resolve

    ids = resolve(_settings(tmp_path).data).ids
    attackers = {ids[1]: "tamper-array", ids[2]: "impersonate"}
    out = tmp_path / "attacked"
    metrics = simulate(
        _settings(out, rounds=2, adversary=",".join(f"{i}:{a}" for i, a in attackers.items())),
        with_baselines=False,
    )
    honest = sorted(set(ids) - set(attackers))
    for r in metrics["rounds"]:
        assert r["train_institutions"] == honest
        assert r["rejected"][f"train:{ids[1]}"].startswith("tampered: content differs")
        assert r["rejected"][f"train:{ids[2]}"].startswith("wrong-institution")
    assert metrics["security"]["rejected_by_reason"] == {"tampered": 2, "wrong-institution": 2}
    assert metrics["per_institution"][ids[1]]["rejected_replies"] == 2
    manifest = load_artifact(out / "model", load_store(out / "trust.json")).verified.manifest
    assert all(sorted(u["accepted"]) == honest for u in manifest["updates"])
    assert metrics["federated"]["auc"] > 0.7


def test_federation_beats_local_only_and_nears_centralized(
    run: tuple[Path, dict[str, Any]],
) -> None:
    _, metrics = run
    fed, cen, local = (
        metrics["federated"]["auc"],
        metrics["centralized"]["auc"],
        metrics["local_only"]["mean_auc"],
    )
    assert fed > local + 0.02
    assert fed > cen - 0.03


def test_local_only_baselines_converge_in_a_three_round_run(
    run: tuple[Path, dict[str, Any]],
) -> None:
    """The baselines do not stop after as many passes as the federation has rounds: each
    institution's local-only model scores like scikit-learn's on the same rows and features."""
    out, metrics = run
    spec = load_artifact(out / "model", load_store(out / "trust.json")).spec
    fed = load_federation(RunSettings.from_run_config(metrics["config"]).data)
    for inst, data in fed.institutions.items():
        x_train, x_test = spec.transform(data.train.x), spec.transform(data.test.x)
        reference = LogisticRegression(max_iter=2000).fit(x_train, data.train.y)
        expected = roc_auc_score(data.test.y, reference.predict_proba(x_test)[:, 1])
        got = metrics["local_only"]["per_institution"][inst]["auc_own"]
        assert got > expected - 0.05, (inst, got, expected)


def test_a_time_split_run_tests_every_institution_on_its_latest_rows(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "out", split="time")
    metrics = simulate(settings)
    assert metrics["config"]["split"] == "time"
    # Later test rows are no same-population non-members: no membership-inference audit.
    assert metrics["privacy"].get("mia_auc") is None and "mia" not in metrics["privacy"]
    fed = load_federation(settings.data)
    for inst, data in fed.institutions.items():
        assert data.train.time is not None and data.test.time is not None
        assert data.train.time.max() < data.test.time.min()
        assert metrics["per_institution"][inst]["n_test"] == len(data.test)
    assert metrics["centralized"]["auc"] > 0.5 and metrics["local_only"]["mean_auc"] > 0.5
    assert all("central" in r for r in metrics["rounds"])


def test_same_seed_same_model(run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = run
    again = tmp_path / "again"
    simulate(_settings(again), with_baselines=False)
    assert (again / "model" / "weights.npz").read_bytes() == (
        out / "model" / "weights.npz"
    ).read_bytes()


def _cli_simulate(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "jointcredit.cli", "simulate", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_cli_on_bring_your_own_data(byod_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = _cli_simulate(
        "--dataset", str(byod_dir), "--rounds", "2", "--strategy", "fedprox", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "centralized (all rows pooled)" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["institutions"] == ["bank-a", "bank-b", "lender-c"]
    assert metrics["config"]["strategy"] == "fedprox"
    # The imputed feature got its missing-indicator column.
    model = load_artifact(out / "model", load_store(out / "trust.json"))
    assert "income__missing" in model.spec.output_names


def test_cli_reports_bad_data_before_training(byod_dir: Path, tmp_path: Path) -> None:
    (byod_dir / "bank-a.csv").write_text(
        "applicant_id,age,income,sector,defaulted\n1,old,1,retail,0\n"
    )
    proc = _cli_simulate("--dataset", str(byod_dir), "--out", str(tmp_path / "x"), timeout=120)
    assert proc.returncode == 2
    assert "bank-a.csv" in proc.stderr and "'age'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_a_failing_institution_fails_the_run_loudly(tmp_path: Path) -> None:
    from jointcredit.simulations.engine import run_simulation as engine

    # Three simulated nodes but only two institutions: node 3 cannot find its data.
    settings = RunSettings.from_run_config(
        {"institutions": 2, "rounds": 1, "min-nodes": 3, "out-dir": str(tmp_path)}
    )
    with pytest.raises(Exception, match=r"federated preprocessing failed.*partition 2"):
        engine(settings, num_nodes=3)
    assert not (tmp_path / "metrics.json").exists()


def test_synthetic_institutions_federate_with_the_mlp_recipe(tmp_path: Path) -> None:
    """Synthetic institutions, trained with the MLP's recipe (what `--model mlp` runs): the
    SCAFFOLD control variates travel, institutions keep theirs between rounds, and the
    federation learns. (The scorecard's default recipe runs on the SBA lenders above.)"""
    settings = RunSettings.from_run_config(
        {"model": "mlp", "dataset": "synthetic", "institutions": 3, "rounds": 3,
         "synthetic-rows": 800, "synthetic-heterogeneity": 0.8, "finetune-epochs": 1,
         "out-dir": str(tmp_path)}
    )  # fmt: skip
    metrics = simulate(settings)
    assert metrics["institutions"] == ["bank-00", "consumer-finance-01", "micro-lender-02"]
    assert metrics["config"]["strategy"] == "scaffold"
    # The ground truth separates well (AUC ~0.94); a federated model must get most of it, and
    # after three rounds already be about as good as each institution's own model trained to
    # convergence (the baselines do not stop after three passes).
    assert metrics["federated"]["auc"] > 0.85
    assert metrics["federated"]["auc"] > metrics["local_only"]["mean_auc"] - 0.02
    # Everyone starts from a zero c_i; from round 2 on each institution corrects with its own.
    fresh = [r["scaffold_fresh_control"] for r in metrics["rounds"]]
    assert fresh == [metrics["institutions"], [], []]
    # The artifact holds the model alone, not the control variates.
    model = load_artifact(tmp_path / "model", load_store(tmp_path / "trust.json")).model
    assert not any(k.startswith("scaffold") for k in model.state_dict())


def test_score_band_counts_give_the_pooled_curves(run: tuple[Path, dict[str, Any]]) -> None:
    """The final evaluation's score-band counts (the validation report's curves) cover each
    institution's test split, and summed they give the pooled test split's AUC and KS up to
    the bands' ties."""
    import numpy as np

    from jointcredit.simulations.score_curves import curves

    _, metrics = run
    hists = [r["score_histogram"] for r in metrics["per_institution"].values()]
    for r, h in zip(metrics["per_institution"].values(), hists, strict=True):
        assert sum(h["good"]) + sum(h["bad"]) == r["n_test"]
    c = curves(
        np.asarray(hists[0]["edges"]),
        np.sum([h["good"] for h in hists], axis=0),
        np.sum([h["bad"] for h in hists], axis=0),
    )
    assert c.auc == pytest.approx(metrics["federated"]["auc"], abs=0.01)
    assert c.ks == pytest.approx(metrics["federated"]["ks"], abs=0.03)


def test_the_validation_report_of_a_real_run(run: tuple[Path, dict[str, Any]]) -> None:
    from typer.testing import CliRunner

    from jointcredit.cli.main import app

    out, _ = run
    result = CliRunner().invoke(app, ["report", str(out), "--trust-any-coordinator"])
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    assert "The signed model verifies: the final model of run" in markdown
    assert "Not recorded by this run" not in markdown  # the run sent its score-band counts
    for figure in ("roc", "ks", "calibration", "scores", "institutions"):
        assert (out / "report_files" / f"{figure}.png").is_file()
    assert "| 3 | " in markdown  # round 3's signed updates, by institution
