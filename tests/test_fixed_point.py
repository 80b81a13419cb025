"""Fixed point for secure sums: real values (negative ones too) split into small digits whose
position-wise sums give back the sum of the values, to the rounding stated."""

from __future__ import annotations

import numpy as np
import pytest

from jointcredit.federation import fixed_point


def test_digit_sums_give_the_sum_of_the_values_within_the_rounding() -> None:
    rng = np.random.default_rng(3)
    # Gradient sums of either sign, hessian sums, a bin of thousands of rows, empty bins.
    parts = [rng.normal(0, 50, (6, 9, 2)) for _ in range(4)]
    parts[0][0, 0] = (-4000.25, 1000.0)
    for k, part in enumerate(parts):
        part[1, :] = 0.0
        part[2, :] = (-k, 4 * k)
    digits = [fixed_point.encode(p) for p in parts]
    for d in digits:
        assert d.shape == (fixed_point.DIGITS, 6 * 9 * 2)
        assert d.min() >= 0 and d.max() < fixed_point.DIGIT_RANGE
    total = fixed_point.decode(np.sum(digits, axis=0), (6, 9, 2))
    exact = np.sum(parts, axis=0)
    assert np.max(np.abs(total - exact)) <= 4 * fixed_point.STEP_ERROR + 1e-12
    assert total[1:3].tolist() == exact[1:3].tolist()  # whole and zero values pass exactly
    assert np.max(np.abs(total - exact)) > 0  # really rounded


def test_a_negative_sum_and_one_near_the_capacity_come_back() -> None:
    values = np.array([-3.5, -(2.0**26), 2.0**26 - 1])
    total = fixed_point.decode(
        fixed_point.encode(values) + fixed_point.encode(values), values.shape
    )
    assert total.tolist() == [-7.0, -(2.0**27), 2.0**27 - 2]  # a sign bit of room: no wrap


def test_values_beyond_the_capacity_or_not_finite_are_refused() -> None:
    for bad in (fixed_point.CAPACITY, -fixed_point.CAPACITY, np.nan, np.inf):
        with pytest.raises(ValueError, match="finite values below"):
            fixed_point.encode(np.array([bad]))
    with pytest.raises(ValueError, match="digit sums"):
        fixed_point.decode(np.zeros((fixed_point.DIGITS, 3)), (4,))
