"""The shipped policy's texts: every `feature_reasons` entry names a feature a shipped dataset
has (a text for a column that is not a feature, such as the SBA schema's time column, is never
shown and hides that the real feature has none)."""

from __future__ import annotations

from jointcredit.data.sba import SBA_SCHEMA
from jointcredit.data.synthetic import synthetic_schema
from jointcredit.service.policy import load_policy


def test_every_feature_reason_names_a_shipped_feature() -> None:
    features = set(SBA_SCHEMA.features) | set(synthetic_schema().features)
    named = set(load_policy().feature_reasons)
    assert named, "the shipped policy has no feature texts"
    assert not named - features, sorted(named - features)
    assert SBA_SCHEMA.time not in named
