"""The empirical upper tail: each series' own record of demand above its recent peak."""

from __future__ import annotations

import numpy as np
import pytest

from presculpt.coordinator.forecast.base import DAY_STEPS, QuantileForecast, SeriesHistory
from presculpt.coordinator.forecast.tail import TailConfig, apply_tail, calibrate_tail, ratio_quantiles

HORIZON = 3
LEVELS = (0.1, 0.5, 0.9, 0.99)


def spiky(days: float = 7, every: int = 50, level: float = 1.0, spike: float = 3.0) -> np.ndarray:
    """``level`` with one step at ``spike`` every ``every`` steps (2% of them)."""
    values = np.full(int(days * DAY_STEPS), level)
    values[every - 1::every] = spike
    return values


def forecast(values: np.ndarray, key: str = "h/vm/cpu_cores", metric: str = "cpu_cores") -> QuantileForecast:
    return QuantileForecast(key, metric, 0.0, 300.0, LEVELS, values, "test")


def test_ratios_of_a_steady_series_are_one():
    r = ratio_quantiles(np.full(3 * DAY_STEPS, 2.0), HORIZON)
    assert r.shape == (HORIZON, 4)
    assert np.allclose(r, 1.0)


def test_ratios_see_the_series_own_spikes():
    r = ratio_quantiles(spiky(), HORIZON, capacity=4.0)
    # 2% of the steps are 3x the level; the steps right after a spike have it in their peak.
    assert r[0, 0] == pytest.approx(1.0)  # p90: the level
    assert r[0, 1] == pytest.approx(3.0)  # p99: a spike on top of a quiet half hour
    assert r[0, -1] == pytest.approx(3.0)


def test_too_little_history_gives_no_ratios_and_leaves_the_forecast_alone():
    short = np.full(DAY_STEPS // 2, 1.0)
    assert ratio_quantiles(short, HORIZON) is None
    f = forecast(np.tile([0.5, 1.0, 1.5, 2.0], (HORIZON, 1)))
    h = SeriesHistory("h/vm/cpu_cores", "cpu_cores", 0.0, short, capacity=4.0)
    assert calibrate_tail(h, f) is f


def test_memory_keeps_the_model_tail_by_default():
    f = forecast(np.tile([100.0, 200.0, 300.0, 400.0], (HORIZON, 1)), "h/vm/memory_mib", "memory_mib")
    h = SeriesHistory("h/vm/memory_mib", "memory_mib", 0.0, spiky(level=200.0, spike=600.0), capacity=1024.0)
    assert calibrate_tail(h, f) is f


def test_calibrated_forecast_keeps_the_body_and_takes_the_tail():
    values = spiky()
    h = SeriesHistory("h/vm/cpu_cores", "cpu_cores", 0.0, values, capacity=4.0)
    model = forecast(np.tile([0.8, 1.0, 1.2, 1.4], (HORIZON, 1)))  # a model blind to this VM's spikes
    out = calibrate_tail(h, model)
    assert out.quantiles == (0.1, 0.5, 0.9, 0.99, 0.995, 0.999)
    assert np.allclose(out.values[:, :2], [0.8, 1.0])  # the body is the model's
    # The recent peak is the level (the last spike was more than half an hour ago): p99 is a spike.
    assert values[-6:].max() == 1.0
    assert np.allclose(out.values[0, 2:], [1.0, 3.0, 3.0, 3.0])  # p90: the VM's level, not the model's 1.2
    assert (np.diff(out.values, axis=1) >= 0).all()


def test_the_tail_is_clipped_to_what_the_series_can_reach():
    levels, out = apply_tail(np.tile([0.5, 1.0, 1.5, 2.0], (HORIZON, 1)), LEVELS,
                             np.full((HORIZON, 4), 10.0), peak=1.0, ceiling=3.5)
    assert levels[-1] == 0.999
    assert out.max() == 3.5
    # Many forecasts at once, one peak each.
    _, many = apply_tail(np.tile([0.5, 1.0, 1.5, 2.0], (2, HORIZON, 1)), LEVELS, np.full((HORIZON, 4), 2.0),
                         peak=np.array([1.0, 1.5]), ceiling=3.0)
    assert many.shape == (2, HORIZON, 6)
    assert np.allclose(many[0, :, -1], 2.0) and np.allclose(many[1, :, -1], 3.0)


def test_bad_tail_config_is_refused():
    with pytest.raises(ValueError, match="increasing"):
        TailConfig(levels=(0.99, 0.9))
    with pytest.raises(ValueError, match="base_steps"):
        TailConfig(base_steps=0)
