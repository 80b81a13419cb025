"""The service's scoring kernels: the same PD as the training code's `predict_pd`, and
attributions that add up (exactly for the scorecard; integrated gradients' completeness for
the MLP) and equal a step-by-step integrated-gradients reference."""

from __future__ import annotations

import numpy as np
import torch

from jointcredit.models.learners import architecture, build_model
from jointcredit.models.preprocessing import CategoricalFeature, NumericFeature, PreprocessingSpec
from jointcredit.models.training import predict_pd
from jointcredit.service.explain import GradientKernel, LinearKernel, feature_columns

SPEC = PreprocessingSpec(
    features=[
        NumericFeature(name="amount", mean=0.0, std=1.0, impute=True),
        CategoricalFeature(name="sector", categories=["a", "b", "c"]),
        NumericFeature(name="age", mean=0.0, std=1.0),
    ]
)  # columns: amount, amount__missing, sector=a/b/c/__other__, age -> 7


def _x(rows: int = 64) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.normal(size=(rows, SPEC.n_outputs)).astype(np.float32)


def _model(kind: str) -> torch.nn.Module:
    model = build_model(architecture(kind, SPEC.n_outputs), seed=1)  # type: ignore[arg-type]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.3)
    return model


def test_scorecard_kernel_is_exact() -> None:
    model, x = _model("logreg"), _x()
    pd_, contrib = LinearKernel(model, feature_columns(SPEC))(x)
    np.testing.assert_allclose(pd_, predict_pd(model, x), rtol=1e-5)
    logit = np.log(pd_ / (1 - pd_))
    bias = float(model.linear.bias.detach()[0])  # type: ignore[union-attr,index]
    np.testing.assert_allclose(contrib.sum(axis=1), logit - bias, atol=1e-6)
    w = model.linear.weight.detach().numpy().reshape(-1)  # type: ignore[union-attr,operator]
    np.testing.assert_allclose(contrib[:, 1], (x[:, 2:6] * w[2:6]).sum(axis=1), rtol=1e-5)


def test_mlp_kernel_is_integrated_gradients() -> None:
    model, x = _model("mlp"), _x(20)
    kernel = GradientKernel(model, feature_columns(SPEC), steps=32)
    pd_, contrib = kernel(x)
    np.testing.assert_allclose(pd_, predict_pd(model, x), rtol=1e-5)
    # Reference: one autograd call per step, the textbook midpoint rule.
    xt = torch.from_numpy(x)
    total = torch.zeros_like(xt)
    for k in range(32):
        point = ((k + 0.5) / 32 * xt).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(point).sum(), point)
        total += grad
    per_column = (xt * total / 32).numpy()
    expected = np.stack([per_column[:, c.start : c.stop].sum(axis=1)
                         for c in feature_columns(SPEC)], axis=1)  # fmt: skip
    np.testing.assert_allclose(contrib, expected, rtol=1e-4, atol=1e-5)
    # Completeness: the contributions add up to logit(x) - logit(average applicant).
    with torch.no_grad():
        gap = (model(xt) - model(torch.zeros_like(xt))).numpy()
    np.testing.assert_allclose(contrib.sum(axis=1), gap, rtol=0.03, atol=0.1)  # 32 steps
