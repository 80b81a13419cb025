"""A vertical scorecard selected by the app's run config (`flwr run .`, `link run`): `model =
"scorecard"` reaches both parties' settings, and a tree setting beside it is refused naming
it rather than ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.common.config import get_fused_config_from_dir

from jointcredit.federation.settings import SettingsError
from jointcredit.federation.vertical import VerticalSettings

ROOT = Path(__file__).resolve().parent.parent


def test_the_run_config_selects_the_vertical_scorecard() -> None:
    fused = get_fused_config_from_dir(ROOT, {"layout": "vertical", "model": "scorecard"})
    settings = VerticalSettings.from_app_config(fused)
    assert settings.model == "scorecard" and settings.max_bins == 32
    gbdt = get_fused_config_from_dir(ROOT, {"layout": "vertical"})
    assert VerticalSettings.from_app_config(gbdt).model == "gbdt"
    with pytest.raises(SettingsError, match="not a setting of vertical scorecards: max-depth"):
        VerticalSettings.from_app_config({**fused, "max-depth": 2})
    with pytest.raises(SettingsError, match="model: mlp"):
        VerticalSettings.from_app_config({**fused, "model": "mlp"})
