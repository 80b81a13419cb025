"""The two references a federation is judged against, on the same features and splits.

- centralized: every institution's training rows pooled (what federation tries to reach);
- local-only: each institution trains alone (what federation must beat).
Both use the federation's agreed preprocessing, model kind, optimiser and epoch budget
(rounds x local epochs), so the only difference is which rows a model sees. They pool rows,
which is exactly why they exist only in simulations.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from jointcredit.data.frames import FederatedData
from jointcredit.models.metrics import risk_metrics
from jointcredit.models.nets import architecture, build_model
from jointcredit.models.preprocessing import PreprocessingSpec
from jointcredit.models.settings import RunSettings
from jointcredit.models.training import predict_pd, train


def _epochs(settings: RunSettings) -> int:
    return settings.rounds * settings.local_epochs


def centralized(
    fed: FederatedData, spec: PreprocessingSpec, settings: RunSettings, x_test: np.ndarray
) -> dict[str, Any]:
    pooled = fed.pooled_train()
    model = build_model(architecture(settings.model, spec.n_outputs), seed=settings.seed)
    train(
        model,
        spec.transform(pooled.x),
        pooled.y,
        settings.train_config(seed=settings.seed, epochs=_epochs(settings)),
    )
    return risk_metrics(fed.pooled_test().y, predict_pd(model, x_test))


def local_only(
    fed: FederatedData, spec: PreprocessingSpec, settings: RunSettings, x_test: np.ndarray
) -> dict[str, Any]:
    y_test = fed.pooled_test().y
    per: dict[str, dict[str, float | None]] = {}
    for inst, data in fed.institutions.items():
        model = build_model(architecture(settings.model, spec.n_outputs), seed=settings.seed)
        seed = (settings.seed + zlib.crc32(inst.encode())) % (2**31)
        train(
            model,
            spec.transform(data.train.x),
            data.train.y,
            settings.train_config(seed=seed, epochs=_epochs(settings)),
        )
        own = risk_metrics(data.test.y, predict_pd(model, spec.transform(data.test.x)))
        pooled = risk_metrics(y_test, predict_pd(model, x_test))
        per[inst] = {
            "auc_own": own["auc"],
            "auc_pooled": pooled["auc"],
            "ks_pooled": pooled["ks"],
            "brier_pooled": pooled["brier"],
        }

    def mean(key: str) -> float | None:
        vals = [float(v) for row in per.values() if (v := row[key]) is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "mean_auc": mean("auc_pooled"),
        "mean_ks": mean("ks_pooled"),
        "mean_brier": mean("brier_pooled"),
        "mean_own_auc": mean("auc_own"),
        "per_institution": per,
    }
