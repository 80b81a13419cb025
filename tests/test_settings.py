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
