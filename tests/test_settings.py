"""The Flower run config defaults in pyproject.toml and the settings model agree."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from jointcredit.models.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_defaults_equal_settings_defaults() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert config == RunSettings().to_run_config()


def test_flower_app_components_and_no_federations_section() -> None:
    flwr = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]
    assert flwr["app"]["components"] == {
        "serverapp": "jointcredit.server.app:app",
        "clientapp": "jointcredit.client.app:app",
    }
    assert "federations" not in flwr  # flwr 1.42 would rewrite pyproject.toml in place


def test_unknown_or_invalid_run_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="roundz"):
        RunSettings.from_run_config({"roundz": 3})
    with pytest.raises(ValueError, match="strategy"):
        RunSettings.from_run_config({"strategy": "fedsgd"})


def test_personalisation_method_follows_what_the_coordinator_may_see() -> None:
    assert RunSettings().personalization_method == "hierarchical"  # logreg, no privacy
    assert RunSettings(model="mlp").personalization_method == "ditto"
    assert RunSettings(privacy="dp-record").personalization_method == "ditto"
    assert RunSettings(privacy="secagg").personalization_method == "ditto"
    assert RunSettings(aggregator="krum").personalization_method == "ditto"
    assert RunSettings(personalization="ditto").personalization_method == "ditto"
    assert RunSettings.model_validate({"finetune-epochs": 0}).personalization_method is None
    for bad in ({"model": "mlp"}, {"privacy": "dp-institution"}, {"aggregator": "median"}):
        with pytest.raises(ValueError, match="personalization hierarchical needs"):
            RunSettings.from_run_config({**bad, "personalization": "hierarchical"})
