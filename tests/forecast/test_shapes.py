"""Shapes and invariants of the forecaster's pieces at a tiny size: the feature windows, the
network's output, and the forecasts handed to the coordinator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from presculpt.coordinator.forecast.base import DAY_STEPS, SeriesHistory
from presculpt.coordinator.forecast.features import (
    CONTEXT_FEATURES,
    CONTEXT_STEPS,
    FUTURE_FEATURES,
    MIN_HISTORY,
    make_windows,
)
from presculpt.coordinator.forecast.lstm.module import QuantileLSTM
from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster
from presculpt.coordinator.forecast.lstm.training import tensors

START_TS = 1_700_006_400.0


@pytest.mark.parametrize("origins", [[MIN_HISTORY], [MIN_HISTORY, MIN_HISTORY + 1, 500], list(range(400, 700, 7))])
def test_make_windows_shapes(make_series, origins):
    values = make_series(3.0)
    w = make_windows(values, START_TS, np.array(origins), 12, "cpu_cores", capacity=4.0, with_target=True)
    n = len(origins)
    assert len(w) == n
    assert w.context.shape == (n, CONTEXT_STEPS, CONTEXT_FEATURES)
    assert w.future.shape == (n, 12, FUTURE_FEATURES)
    assert w.target is not None and w.target.shape == (n, 12)
    for f in dataclasses.fields(w):
        array = getattr(w, f.name)
        if array is not None:
            assert array.shape[0] == n, f.name
            assert np.isfinite(array).all(), f.name
    # The target of an origin is what came next, in the metric's units.
    np.testing.assert_array_equal(w.target[0], values[origins[0]:origins[0] + 12])
    # The scale is positive: the model forecasts multiples of it.
    assert (w.scale > 0).all()


def test_make_windows_needs_min_history(make_series):
    with pytest.raises(ValueError, match="MIN_HISTORY"):
        make_windows(make_series(3.0), START_TS, np.array([MIN_HISTORY - 1]), 12, "cpu_cores")


def test_make_windows_does_not_look_past_the_origin(make_series):
    values = make_series(3.0)
    changed = values.copy()
    origin = 500
    changed[origin:] *= 3
    a = make_windows(values, START_TS, np.array([origin]), 12, "cpu_cores", 4.0)
    b = make_windows(changed, START_TS, np.array([origin]), 12, "cpu_cores", 4.0)
    for f in ("context", "future", "scale"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def test_network_output_shape_and_order(make_series, tiny_model):
    torch.manual_seed(0)
    model = QuantileLSTM(tiny_model).eval()
    w = make_windows(make_series(3.0), START_TS, np.arange(MIN_HISTORY, 800, 5), tiny_model.horizon,
                     "memory_mib", capacity=8.0)
    with torch.no_grad():
        out = model(*tensors(w)).numpy()
    assert out.shape == (len(w), tiny_model.horizon, len(tiny_model.quantiles))
    assert (np.diff(out, axis=-1) >= 0).all()


def test_predict_one_forecast_per_history(make_series, tiny_model):
    torch.manual_seed(0)
    q = len(tiny_model.quantiles)
    forecaster = LstmForecaster(QuantileLSTM(tiny_model), np.zeros((tiny_model.n_metrics, tiny_model.horizon, q)),
                                threads=1)
    histories = [
        SeriesHistory(f"vm-{i}/{metric}", metric, START_TS + 3 * 86400, make_series(3.0, seed=i) * scale,
                      capacity=capacity, workload_class="web" if i % 2 else "", customer="acme" if i == 1 else "")
        for i, (metric, scale, capacity) in enumerate([
            ("cpu_cores", 1.0, 2.0), ("cpu_cores", 0.1, 16.0), ("memory_mib", 1000.0, 4096.0),
            ("memory_mib", 3000.0, None)])
    ]
    forecasts = forecaster.predict(histories)
    assert [f.key for f in forecasts] == [h.key for h in histories]
    for f, h in zip(forecasts, histories):
        assert f.values.shape == (tiny_model.horizon, q)
        assert f.metric == h.metric and f.origin == h.origin and f.quantiles == tiny_model.quantiles
        assert not f.cold_start and f.model == forecaster.name
        assert np.isfinite(f.values).all()
        assert (f.values >= 0).all()
        assert (np.diff(f.values, axis=-1) >= 0).all()


def test_predict_keeps_order_with_cold_and_warm_mixed(make_series, tiny_model):
    forecaster = LstmForecaster(QuantileLSTM(tiny_model), np.zeros((2, tiny_model.horizon, 4)), threads=1)
    long, short = make_series(3.0), make_series(0.5)
    histories = [SeriesHistory(f"s{i}", "cpu_cores", START_TS, values, 4.0)
                 for i, values in enumerate([short, long, short, long])]
    forecasts = forecaster.predict(histories)
    assert [f.key for f in forecasts] == ["s0", "s1", "s2", "s3"]
    assert [f.cold_start for f in forecasts] == [True, False, True, False]
    assert len(short) < MIN_HISTORY <= len(long) and len(long) == 3 * DAY_STEPS
