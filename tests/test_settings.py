"""Run settings: one resolution for every way a run starts, and every impossible run refused
before any node starts (exit 2, naming the keys)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.rich_utils
from flwr.common.config import get_fused_config_from_dir
from typer.testing import CliRunner

from jointcredit.cli.main import app as cli
from jointcredit.cli.options import FLAGS
from jointcredit.cli.run_cmds import LOCAL_RUN_EXCLUDES
from jointcredit.deploy import kits, processes
from jointcredit.federation.recipes import AUTO, RECIPE_KEYS, recipe
from jointcredit.federation.settings import RunSettings, SettingsError
from jointcredit.simulations.sweep import SweepGrid, cells

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


class Started(Exception):
    """Raised by a stand-in for the simulation: the run would have started here."""


def _pyproject_config() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"][
        "app"
    ]["config"]
    return config


def test_pyproject_lists_every_setting_with_the_recipe_keys_left_to_the_recipe() -> None:
    config = _pyproject_config()
    assert set(config) == set(RunSettings().to_run_config())
    assert {k for k, v in config.items() if v == AUTO} == {
        *RECIPE_KEYS,
        "model",
        "personalization",
    }
    assert RunSettings.from_run_config(config) == RunSettings()
    assert RunSettings().model == "gbdt"


def test_flower_app_components_and_no_federations_section() -> None:
    flwr = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]
    assert flwr["app"]["components"] == {
        "serverapp": "jointcredit.server.app:app",
        "clientapp": "jointcredit.client.app:app",
    }
    assert "federations" not in flwr  # flwr 1.42 would rewrite pyproject.toml in place


def test_unknown_or_invalid_run_config_is_rejected() -> None:
    with pytest.raises(SettingsError, match=r"roundz: not a setting \(did you mean rounds\?\)"):
        RunSettings.from_run_config({"roundz": 3})
    with pytest.raises(SettingsError, match=r"xyzzy: not a setting \(jointcredit simulate"):
        RunSettings.from_run_config({"xyzzy": 3})
    with pytest.raises(SettingsError, match="strategy"):
        RunSettings.from_run_config({"strategy": "fedsgd"})


def test_recipes_fill_only_what_the_caller_left_out() -> None:
    mlp = RunSettings.from_run_config({"model": "mlp"})
    assert (mlp.strategy, mlp.optimizer, mlp.learning_rate) == ("scaffold", "adam", 0.003)
    assert RunSettings.from_run_config({"model": "mlp", "learning-rate": AUTO}) == mlp
    chosen = RunSettings.from_run_config({"model": "mlp", "learning-rate": 0.01})
    assert chosen.learning_rate == 0.01 and chosen.optimizer == "adam"
    # The field's own name works as well as the run-config key.
    assert RunSettings.model_validate({"model": "mlp", "learning_rate": 0.01}) == chosen
    logreg = RunSettings(model="logreg")
    assert logreg.strategy == recipe("logreg")["strategy"] == "fedavgm"
    # Institution-level DP is accounted for plain FedAvg only: its recipe says so.
    assert RunSettings.from_run_config({"privacy": "dp-institution"}).strategy == "fedavg"
    dp_mlp = RunSettings.from_run_config({"model": "mlp", "privacy": "dp-institution"})
    assert dp_mlp.strategy == "fedavg" and dp_mlp.optimizer == "adam"


def test_settings_round_trip_through_the_run_config() -> None:
    for config in ({"model": "mlp"}, {"privacy": "dp-institution"}, {"aggregator": "krum"}):
        settings = RunSettings.from_run_config(config)
        assert RunSettings.from_run_config(settings.to_run_config()) == settings


def test_personalisation_method_follows_what_the_coordinator_may_see() -> None:
    logreg = {"model": "logreg"}
    assert RunSettings(**logreg).personalization_method == "hierarchical"  # no privacy
    assert RunSettings(model="mlp").personalization_method == "ditto"
    assert RunSettings(privacy="dp-record").personalization_method == "ditto"
    assert RunSettings(**logreg, privacy="secagg").personalization_method == "ditto"
    assert RunSettings(aggregator="krum").personalization_method == "ditto"
    assert RunSettings(personalization="ditto").personalization_method == "ditto"
    assert RunSettings.model_validate({"finetune-epochs": 0}).personalization_method is None
    # Trees: each institution's own extra trees on top of the global ones.
    assert RunSettings(model="gbdt").personalization_method == "trees"
    assert RunSettings(model="gbdt", personal_trees=0).personalization_method is None


@pytest.mark.parametrize(
    ("config", "model"),
    [
        ({}, "gbdt"),
        ({"model": AUTO}, "gbdt"),
        ({"privacy": "secagg"}, "gbdt"),
        ({"rounds": 20}, "gbdt"),  # the default, as pyproject.toml lists it
        ({"trees": 10, "rounds": 3}, "gbdt"),
        ({"rounds": 3}, "logreg"),
        ({"privacy": "dp-record"}, "logreg"),
        ({"privacy": "dp-institution"}, "logreg"),
        ({"aggregator": "median"}, "logreg"),
        ({"attackers": 2, "attack": "sign-flip", "aggregator": "krum"}, "logreg"),
        ({"personalization": "ditto"}, "logreg"),
        ({"strategy": "fedprox"}, "logreg"),
        ({"model": "mlp"}, "mlp"),
        ({"model": "gbdt", "privacy": "secagg"}, "gbdt"),
    ],
)
def test_model_auto_means_trees_unless_the_run_needs_weight_updates(
    config: dict[str, Any], model: str
) -> None:
    settings = RunSettings.from_run_config(config)
    assert settings.model == model
    # The resolved model is what the run records and replays.
    assert settings.to_run_config()["model"] == model
    assert RunSettings.from_run_config(settings.to_run_config()) == settings


# Every combination that cannot run, and the keys its refusal must name.
IMPOSSIBLE: list[tuple[dict[str, Any], list[str]]] = [
    ({"privacy": "dp-institution", "strategy": "fedavgm"}, ["strategy", "dp-institution"]),
    ({"privacy": "dp-institution", "epsilon": "inf"}, ["epsilon", "dp-institution"]),
    ({"privacy": "secagg", "aggregator": "median"}, ["aggregator = median", "secagg"]),
    ({"privacy": "dp-institution", "aggregator": "krum"}, ["aggregator = krum"]),
    ({"strategy": "scaffold", "privacy": "dp-record"}, ["strategy = scaffold", "dp-record"]),
    ({"strategy": "scaffold", "aggregator": "trimmed"}, ["strategy = scaffold", "trimmed"]),
    ({"personalization": "hierarchical", "model": "mlp"}, ["personalization = hierarchical"]),
    ({"personalization": "hierarchical", "privacy": "secagg"}, ["personalization"]),
    ({"attackers": 2}, ["attackers = 2", "attack = none"]),
    ({"attack": "sign-flip"}, ["attackers = 0", "attack = sign-flip"]),
    ({"adversary": "bank-a:steal"}, ["adversary 'bank-a:steal'"]),
    ({"trust-file": "trust.json"}, ["trust-file and coordinator-key"]),
    (
        {"trust-file": "t.json", "coordinator-key": "c.key", "adversary": "bank-a:unsigned"},
        ["adversary and attackers are simulation settings"],
    ),
    ({"privacy": "secagg", "institutions": 2}, ["secagg needs at least 3"]),
    ({"aggregator": "bulyan", "institutions": 6}, ["aggregator = bulyan", "needs at least 7"]),
    ({"aggregator": "krum", "institutions": 4}, ["aggregator = krum", "needs at least 5"]),
    (
        {"aggregator": "multikrum", "institutions": 6, "attackers": 2, "attack": "scale"},
        ["needs at least 7"],
    ),
    ({"attackers": 5, "attack": "scale", "institutions": 4}, ["attackers = 5"]),
    ({"hindsight-vintage": True, "dataset": "synthetic"}, ["hindsight-vintage", "synthetic"]),
    ({"hindsight-vintage": True, "data-dir": "/d"}, ["hindsight-vintage", "/d"]),
    ({"split": "later"}, ["split"]),
    (
        {"trust-file": "t.json", "coordinator-key": "c.key", "hindsight-vintage": True},
        ["hindsight-vintage measures hindsight in simulations"],
    ),
    ({"model": "gbdt", "privacy": "dp-record"}, ["privacy = dp-record", "model = gbdt"]),
    ({"model": "gbdt", "privacy": "dp-institution"}, ["privacy = dp-institution", "gbdt"]),
    ({"model": "gbdt", "privacy": "secagg", "institutions": 2}, ["secagg needs at least 3"]),
    ({"model": "gbdt", "aggregator": "median"}, ["aggregator = median", "model = gbdt"]),
    ({"model": "gbdt", "attackers": 1, "attack": "scale"}, ["attackers = 1", "gbdt"]),
    ({"model": "gbdt", "personalization": "ditto"}, ["personalization = ditto", "gbdt"]),
    ({"fraction-train": 0.5, "privacy": "secagg"}, ["fraction-train = 0.5", "secagg"]),
    ({"fraction-train": 0.5, "privacy": "dp-institution"}, ["fraction-train", "dp-institution"]),
    ({"fraction-train": 0.5, "strategy": "scaffold"}, ["fraction-train", "scaffold"]),
    ({"fraction-train": 0.5, "model": "mlp"}, ["fraction-train", "scaffold"]),  # its recipe
    ({"fraction-train": 0.5, "model": "gbdt"}, ["fraction-train = 0.5", "model = gbdt"]),
    ({"fraction-train": 0}, ["fraction-train"]),
    ({"fraction-train": 1.5}, ["fraction-train"]),
    (
        {"fraction-train": 0.5, "aggregator": "krum", "institutions": 8},
        ["aggregator = krum", "needs at least 5", "4 of 8 each round"],
    ),
    ({"model": "gbdt", "max-bins": 1}, ["max-bins"]),
    ({"model": "gbdt", "max-depth": 0}, ["max-depth"]),
    ({"model": "gbdt", "tree-learning-rate": 0}, ["tree-learning-rate"]),
    ({"model": "gbdt", "min-child-weight": -1}, ["min-child-weight"]),
]


@pytest.mark.parametrize(("config", "named"), IMPOSSIBLE)
def test_every_impossible_combination_is_refused_naming_its_keys(
    config: dict[str, Any], named: list[str]
) -> None:
    with pytest.raises(SettingsError) as info:
        RunSettings.from_run_config(config)
    for text in named:
        assert text in str(info.value), (text, str(info.value))


def test_sampling_trains_weight_models_on_a_share_of_the_institutions() -> None:
    sampled = RunSettings.from_run_config({"fraction-train": 0.1})
    assert sampled.model == "logreg"  # auto: sampling needs weight updates
    # record-level DP spends per institution, only in the rounds it trains
    RunSettings.from_run_config({"fraction-train": 0.1, "privacy": "dp-record"})
    RunSettings.from_run_config({"fraction-train": 0.1, "model": "mlp", "strategy": "fedavgm"})
    krum = RunSettings.from_run_config({"fraction-train": 0.5, "aggregator": "krum"})
    assert krum.for_institutions(10).min_nodes == 10  # 5 sampled: Krum's quorum against 1
    with pytest.raises(SettingsError, match="4 of 8 each round"):
        krum.for_institutions(8)


def test_count_rules_are_checked_once_the_institution_count_is_known() -> None:
    settings = RunSettings.from_run_config({"aggregator": "bulyan"})  # count unknown: allowed
    ready = settings.for_institutions(7)
    assert ready.min_nodes == 7 and ready.institutions == 0  # the data selection stays
    with pytest.raises(SettingsError, match="bulyan against 1 attacker"):
        settings.for_institutions(6, "nodes that joined")
    secagg = RunSettings.from_run_config({"privacy": "secagg"})
    assert secagg.for_institutions(3).min_nodes == 3
    with pytest.raises(SettingsError, match="secagg needs at least 3"):
        secagg.for_institutions(2)
    everyone = RunSettings.from_run_config({"privacy": "secagg", "secagg-threshold": 1.0})
    with pytest.raises(SettingsError, match="fewer than all of them"):
        everyone.for_institutions(10)


def test_trees_run_under_secagg_with_three_institutions_and_never_under_dp() -> None:
    trees = RunSettings.from_run_config({"model": "gbdt", "privacy": "secagg", "institutions": 3})
    assert trees.for_institutions(3).min_nodes == 3
    with pytest.raises(SettingsError, match="secagg needs at least 3"):
        RunSettings.from_run_config({"model": "gbdt", "privacy": "secagg"}).for_institutions(2)
    for dp in ("dp-record", "dp-institution"):
        with pytest.raises(SettingsError) as info:
            RunSettings.from_run_config({"model": "gbdt", "privacy": dp})
        assert "no privacy accountant covers the trees' histograms" in str(info.value)
        assert "use privacy none or secagg" in str(info.value)


# -- the CLI: refused before anything starts, exit 2 --------------------------------------


def _start(started: list[RunSettings]) -> Any:
    def stand_in(settings: RunSettings, **options: Any) -> None:
        started.append(settings)
        raise Started

    return stand_in


@pytest.mark.parametrize(
    "args",
    [
        ["--privacy", "dp-institution", "--strategy", "fedavgm"],
        ["--aggregator", "bulyan", "--institutions", "5"],
        ["--aggregator", "bulyan"],  # the shipped sample has 20 lenders: f=1 needs 7, fine...
        ["--attackers", "1"],
        ["--rounds", "3", "--run-config", "rounds=4"],
        ["--learning-rate", "0.1", "--run-config", "learning_rate=0.2"],
        ["--run-config", "roundz=4"],
        ["--privacy", "secagg", "--institutions", "2"],
        ["--model", "gbdt", "--privacy", "dp-record"],
        ["--model", "gbdt", "--privacy", "secagg", "--institutions", "2"],
        ["--model", "gbdt", "--max-depth", "0"],
    ],
)
def test_simulate_refuses_before_starting(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[RunSettings] = []
    monkeypatch.setattr("jointcredit.simulations.simulate.simulate", _start(started))
    result = runner.invoke(cli, ["simulate", "--out", str(tmp_path), *args])
    if args == ["--aggregator", "bulyan"]:  # ...so this one starts
        assert started and started[0].min_nodes == 20
        return
    assert result.exit_code == 2, result.output
    assert not started


def _help_of_each_option(text: str) -> dict[str, str]:
    """Option -> its help text as rendered (rich wraps it over several lines)."""
    out: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        body = line.strip("│ ")
        if body.startswith("--"):
            current = body.split()[0].replace(",", "/").split("/")[0]
            out[current] = body
        elif current:
            out[current] += " " + body
    return {k: " ".join(v.split()) for k, v in out.items()}


def test_simulate_help_shows_every_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 200)  # rich ignores click's width
    result = runner.invoke(cli, ["simulate", "--help"], terminal_width=200)
    assert result.exit_code == 0
    shown = _help_of_each_option(result.output)
    for key in RECIPE_KEYS:
        assert "[default: auto]" in shown[f"--{key}"], shown[f"--{key}"]
    for name, field in RunSettings.model_fields.items():
        key = field.alias or name
        if key in LOCAL_RUN_EXCLUDES:
            # `--resume RUN_DIR` is simulate's own option: which killed run to continue.
            assert f"--{key}" not in shown or key == "resume", key
            continue
        flag = FLAGS.get(key, (f"--{key}",))[0]
        assert flag in shown, f"no option for {key}"
        if field.default not in ("", None):
            assert "[default: " in shown[flag], shown[flag]
        assert field.description and field.description.split()[0] in shown[flag]


def test_sweep_refuses_a_grid_with_an_impossible_cell(tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(
        'seeds = [1]\n[base]\ndataset = "synthetic"\ninstitutions = 5\n'
        '[grid]\naggregator = ["fedavg", "bulyan"]\n'
    )
    result = runner.invoke(cli, ["sweep", "--grid", str(grid), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "bulyan" in result.output and not (tmp_path / "o" / "cells").exists()


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kits") / "fed"
    names = ["bank-a", "bank-b", "bank-c", "bank-d"]
    kits.provision("settings-test", names, "127.0.0.1:9092", out)
    return out / kits.COORDINATOR_DIR


def test_link_run_refuses_before_flwr_run(
    kit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[object] = []
    monkeypatch.setattr(processes, "start_run", lambda *a, **k: called.append(a))
    link = ["link", "run", "--kit", str(kit), "--app", str(ROOT)]
    for bad in (
        ["--run-config", "aggregator='krum'"],
        ["--run-config", "privacy='secagg' aggregator='median'"],
        ["--run-config", "roundz=1"],
        ["--run-config", "adversary='bank-a:unsigned'"],  # a deployment misbehaves on no one
        ["--rounds", "3", "--run-config", "rounds=4"],
    ):
        result = runner.invoke(cli, [*link, *bad])
        assert result.exit_code == 2, (bad, result.output)
    result = runner.invoke(cli, [*link[:-1], str(tmp_path)])  # no app there
    assert result.exit_code == 2 and "not a Flower app" in result.output
    assert not called


def test_link_run_takes_bare_words_as_text(
    kit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(processes, "start_run", lambda *a, **kw: sent.append(a[3]) or (1, "x"))
    runner.invoke(
        cli,
        ["link", "run", "--kit", str(kit), "--app", str(ROOT), "--run-config",
         "privacy=dp-record epsilon=2 model='mlp'", "--flwr-home", str(tmp_path / "home")],
    )  # fmt: skip
    assert sent and sent[0]["privacy"] == "dp-record" and sent[0]["epsilon"] == 2
    assert "rounds" not in sent[0]  # the app's own default applies


# -- one resolution for the four ways a run starts ----------------------------------------

KEYS: dict[str, Any] = {
    "dataset": "synthetic",
    "institutions": 4,
    "model": "mlp",
    "privacy": "dp-record",
    "epsilon": 4.0,
    "rounds": 5,
    "seed": 3,
    "finetune-epochs": 2,
    "split": "time",
}
# Where each way keeps its outputs and identity: legitimately different.
PER_WAY = {"out-dir", "trust-file", "coordinator-key", "central-eval", "keys-dir"}


def _comparable(settings: RunSettings) -> dict[str, Any]:
    return {k: v for k, v in settings.to_run_config().items() if k not in PER_WAY}


def test_simulate_sweep_flwr_run_and_link_run_resolve_the_same_keys_alike(
    kit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1. jointcredit simulate (the CLI's generated options), stopped where the run would start.
    started: list[RunSettings] = []
    monkeypatch.setattr("jointcredit.simulations.simulate.simulate", _start(started))
    options = [x for k, v in KEYS.items() for x in (f"--{k}", str(v))]
    result = runner.invoke(cli, ["simulate", "--out", str(tmp_path / "sim"), *options])
    assert started, result.output
    simulate = started[0]
    # 2. jointcredit sweep: a grid whose base holds the keys.
    (cell,) = cells(SweepGrid(seeds=[KEYS["seed"]], base=KEYS), tmp_path / "sweep")
    sweep = cell.settings
    # 3. flwr run . --run-config (scripts/flwr_run_local.sh adds min-nodes): Flower fuses
    # pyproject's config with the overrides; the ServerApp validates that and checks it for
    # the nodes that joined (Coordinator.join).
    fused = get_fused_config_from_dir(ROOT, {**KEYS, "min-nodes": KEYS["institutions"]})
    flwr_run = RunSettings.from_run_config(fused).for_institutions(KEYS["institutions"])
    # 4. link run: what it would hand to `flwr run`, fused the same way.
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(processes, "start_run", lambda *a, **kw: sent.append(a[3]) or (1, "x"))
    overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in KEYS.items() if k != "rounds")
    result = runner.invoke(
        cli,
        ["link", "run", "--kit", str(kit), "--app", str(ROOT), "--rounds", str(KEYS["rounds"]),
         "--run-config", overrides, "--flwr-home", str(tmp_path / "home")],
    )  # fmt: skip
    assert sent, result.output
    link_run = RunSettings.from_run_config(get_fused_config_from_dir(ROOT, sent[0]))
    link_run = link_run.for_institutions(4)

    reference = _comparable(simulate)
    assert reference["strategy"] == "fedavgm" and reference["optimizer"] == "adam"  # MLP + DP
    assert reference["split"] == "time" and simulate.data.split == "time"
    assert _comparable(sweep) == reference
    assert _comparable(flwr_run) == reference
    assert _comparable(link_run) == reference


def test_a_models_provenance_names_no_machine_local_path() -> None:
    settings = RunSettings.from_run_config(
        {"model": "logreg", "out-dir": "/srv/runs/.x.partial-1", "keys-dir": "/dev/shm/k"}
    )
    provenance = settings.provenance()
    assert provenance["model"] == "logreg" and provenance["dataset"] == "sba"
    assert not {"out-dir", "keys-dir", "trust-file", "coordinator-key"} & set(provenance)
