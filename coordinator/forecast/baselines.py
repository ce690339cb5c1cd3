"""The simple forecasts operators already have, as baselines and for cold start. numpy (and
statsmodels for exponential smoothing).

Each turns a series ``x`` and forecast origins into quantiles ``(N, horizon, len(quantiles))``:

- seasonal naive: the same step one ``lag`` earlier (a day or a week), plus the empirical
  quantiles of that rule's errors on the training part;
- exponential smoothing: statsmodels' ETS (additive error, no trend or season) fitted on the
  training part, then run over the whole series with the fitted parameters (a causal filter: the
  forecast at an origin uses data before it only), plus the empirical error quantiles per step;
- recent percentile: the quantiles of the last ``window`` values (what VPA-style recommenders do).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from presculpt.coordinator.forecast.base import DAY_STEPS, QuantileForecast, SeriesHistory

RECENT_WINDOW = DAY_STEPS


def _future(x: np.ndarray, origins: np.ndarray, horizon: int, lag: int) -> np.ndarray:
    """The ``horizon`` values from ``origin - lag`` on, for each origin (NaN past the end). An
    origin with less than ``lag`` history uses the oldest values (never wraps to the end)."""
    padded = np.concatenate([x, np.full(horizon, np.nan)])
    return sliding_window_view(padded, horizon)[np.maximum(origins - lag, 0)]


def residual_quantiles(x: np.ndarray, train_end: int, lag: int, quantiles: Sequence[float]) -> np.ndarray:
    """Quantiles of ``x[t] - x[t - lag]`` over the training part."""
    if train_end <= lag:
        return np.zeros(len(quantiles))
    errors = x[lag:train_end] - x[:train_end - lag]
    return np.quantile(errors, quantiles)


def seasonal_naive(x: np.ndarray, train_end: int, origins: np.ndarray, horizon: int, lag: int,
                   quantiles: Sequence[float]) -> np.ndarray:
    point = _future(x, origins, horizon, lag)
    return np.maximum(point[..., None] + residual_quantiles(x, train_end, lag, quantiles), 0.0)


def recent_percentile(x: np.ndarray, origins: np.ndarray, horizon: int, quantiles: Sequence[float],
                      window: int = RECENT_WINDOW) -> np.ndarray:
    levels = np.quantile(sliding_window_view(x, window)[origins - window], quantiles, axis=1).T
    return np.repeat(levels[:, None, :], horizon, axis=1)


def exponential_smoothing(x: np.ndarray, train_end: int, origins: np.ndarray, horizon: int,
                          quantiles: Sequence[float]) -> np.ndarray:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = ETSModel(x[:train_end], error="add", trend=None, seasonal=None).fit(disp=False)
        one_step = np.asarray(ETSModel(x, error="add", trend=None, seasonal=None).smooth(fitted.params).fittedvalues)
    # one_step[t] forecasts x[t] from data before t: with no trend it is the forecast of every step.
    train_origins = np.arange(1, max(2, train_end - horizon))
    errors = _future(x, train_origins, horizon, 0) - one_step[train_origins, None]
    spread = np.nanquantile(errors, quantiles, axis=0).T  # (horizon, Q)
    return np.maximum(one_step[origins, None, None] + spread[None], 0.0)


class RecentPercentileForecaster:
    """The cold-start forecaster: quantiles of whatever recent history there is, flat over the
    horizon. Every forecast it makes says ``cold_start``."""

    name = "cold-start:recent-percentile"

    def __init__(self, quantiles: Sequence[float], horizon: int, window: int = RECENT_WINDOW):
        self.quantiles = tuple(quantiles)
        self.horizon = horizon
        self.window = window

    def predict(self, histories: Sequence[SeriesHistory]) -> list[QuantileForecast]:
        out = []
        for h in histories:
            recent = np.asarray(h.values, dtype=np.float64)[-self.window:]
            recent = recent[~np.isnan(recent)]
            levels = np.quantile(recent, self.quantiles) if len(recent) else np.zeros(len(self.quantiles))
            out.append(QuantileForecast(h.key, h.metric, h.origin, h.step_s, self.quantiles,
                                        np.repeat(levels[None, :], self.horizon, axis=0), self.name,
                                        cold_start=True))
        return out
