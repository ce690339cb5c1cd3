"""Series the LSTM cannot forecast yet (too little history) get the recent-percentile forecast,
marked as a cold start; gaps are filled forward, and nothing crashes on a series with no data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from presculpt.coordinator.forecast.base import DAY_STEPS, SeriesHistory, forward_fill
from presculpt.coordinator.forecast.baselines import RECENT_WINDOW, RecentPercentileForecaster
from presculpt.coordinator.forecast.features import MIN_HISTORY
from presculpt.coordinator.forecast.lstm.module import QuantileLSTM
from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster

ORIGIN = 1_700_006_400.0 + 3 * 86400


@pytest.fixture
def forecaster(tiny_model) -> LstmForecaster:
    torch.manual_seed(0)
    return LstmForecaster(QuantileLSTM(tiny_model), np.zeros((2, tiny_model.horizon, len(tiny_model.quantiles))),
                          threads=1)


def test_short_history_is_a_cold_start_from_recent_percentiles(forecaster, make_series):
    values = make_series(1.0)[: MIN_HISTORY - 1]
    [f] = forecaster.predict([SeriesHistory("new-vm/cpu_cores", "cpu_cores", ORIGIN, values, 4.0)])
    assert f.cold_start
    assert f.model == RecentPercentileForecaster.name
    expected = np.quantile(values[-RECENT_WINDOW:], forecaster.quantiles)
    assert f.values.shape == (forecaster.horizon, len(forecaster.quantiles))
    for step in f.values:
        np.testing.assert_allclose(step, expected)


def test_nan_does_not_count_as_history(forecaster, make_series):
    values = make_series(3.0)
    values[: len(values) - MIN_HISTORY + 1] = np.nan  # long enough, but too few known values
    [f] = forecaster.predict([SeriesHistory("k", "cpu_cores", ORIGIN, values, 4.0)])
    assert f.cold_start
    known = values[-RECENT_WINDOW:]
    np.testing.assert_allclose(f.values[0], np.quantile(known[~np.isnan(known)], forecaster.quantiles))


def test_gaps_are_filled_forward(forecaster, make_series):
    values = make_series(3.0)
    gappy = values.copy()
    gappy[100:130] = np.nan
    gappy[-20:-5] = np.nan  # a gap inside the context the network reads
    filled = forward_fill(gappy)
    assert not np.isnan(filled).any() and filled[-6] == gappy[-21]
    a, b = forecaster.predict([SeriesHistory("gappy", "cpu_cores", ORIGIN, gappy, 4.0),
                               SeriesHistory("filled", "cpu_cores", ORIGIN, filled, 4.0)])
    assert not a.cold_start
    assert np.isfinite(a.values).all()
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6)


def test_all_nan_history_does_not_crash(forecaster):
    [f] = forecaster.predict([SeriesHistory("empty", "memory_mib", ORIGIN, np.full(3 * DAY_STEPS, np.nan), 1024.0)])
    assert f.cold_start
    assert f.values.shape == (forecaster.horizon, len(forecaster.quantiles))
    assert np.isfinite(f.values).all()


def test_empty_history_does_not_crash(forecaster):
    [f] = forecaster.predict([SeriesHistory("none", "cpu_cores", ORIGIN, np.zeros(0), None)])
    assert f.cold_start and np.isfinite(f.values).all()


def test_forward_fill():
    np.testing.assert_array_equal(forward_fill(np.array([np.nan, 2.0, np.nan, np.nan, 5.0, np.nan])),
                                  [2.0, 2.0, 2.0, 2.0, 5.0, 5.0])
    np.testing.assert_array_equal(forward_fill(np.array([np.nan, np.nan])), [0.0, 0.0])
