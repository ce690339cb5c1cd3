"""The baselines the LSTM is measured against must be right themselves: exact where the rule is
exact, causal, and the percentile what numpy says it is."""

from __future__ import annotations

import numpy as np
import pytest

from presculpt.coordinator.forecast import baselines
from presculpt.coordinator.forecast.base import DAY_STEPS, QUANTILES

HORIZON = 12


def test_seasonal_naive_is_exact_on_a_periodic_series():
    rng = np.random.default_rng(1)
    day = rng.uniform(0.5, 3.0, DAY_STEPS)  # any shape at all, repeated every day
    x = np.tile(day, 4)
    train_end = 2 * DAY_STEPS
    origins = np.arange(train_end, len(x) - HORIZON + 1, 17)
    predicted = baselines.seasonal_naive(x, train_end, origins, HORIZON, DAY_STEPS, QUANTILES)
    assert predicted.shape == (len(origins), HORIZON, len(QUANTILES))
    actual = np.lib.stride_tricks.sliding_window_view(x, HORIZON)[origins]
    for q in range(len(QUANTILES)):
        np.testing.assert_allclose(predicted[..., q], actual, atol=1e-12)


def test_seasonal_naive_spread_comes_from_training_errors(make_series):
    x = make_series(4.0, noise=0.2)
    train_end = 3 * DAY_STEPS
    predicted = baselines.seasonal_naive(x, train_end, np.array([train_end]), HORIZON, DAY_STEPS, QUANTILES)
    errors = x[DAY_STEPS:train_end] - x[:train_end - DAY_STEPS]
    expected = np.maximum(x[train_end - DAY_STEPS:train_end - DAY_STEPS + HORIZON, None]
                          + np.quantile(errors, QUANTILES), 0.0)
    np.testing.assert_allclose(predicted[0], expected)


def test_exponential_smoothing_is_causal(make_series):
    x = make_series(4.0, noise=0.2)
    train_end = 3 * DAY_STEPS
    origin = train_end + 40
    before = baselines.exponential_smoothing(x, train_end, np.array([origin]), HORIZON, QUANTILES)
    changed = x.copy()
    changed[origin:] = 50.0  # whatever happens from the origin on
    after = baselines.exponential_smoothing(changed, train_end, np.array([origin]), HORIZON, QUANTILES)
    np.testing.assert_allclose(before, after, rtol=1e-12)
    assert before.shape == (1, HORIZON, len(QUANTILES))
    assert (np.diff(before, axis=-1) >= 0).all()
    # ... while a change before the origin does move it.
    changed = x.copy()
    changed[origin - 3:origin] = 50.0
    moved = baselines.exponential_smoothing(changed, train_end, np.array([origin]), HORIZON, QUANTILES)
    assert not np.allclose(before, moved)


@pytest.mark.parametrize("window", [12, DAY_STEPS])
def test_recent_percentile_is_the_quantile_of_the_window(make_series, window):
    x = make_series(2.0, noise=0.3)
    origins = np.array([DAY_STEPS, DAY_STEPS + 1, 2 * DAY_STEPS - 5])
    predicted = baselines.recent_percentile(x, origins, HORIZON, QUANTILES, window=window)
    assert predicted.shape == (len(origins), HORIZON, len(QUANTILES))
    for row, origin in zip(predicted, origins):
        expected = np.quantile(x[origin - window:origin], QUANTILES)
        for step in row:
            np.testing.assert_allclose(step, expected)
