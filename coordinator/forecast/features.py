"""Model inputs, vectorised over many forecast origins. numpy only.

Every input of an origin ``t`` (the first step to forecast; data up to ``t-1`` is known) is computed
from one row of a *history matrix*: the ``LOOKBACK`` values before ``t`` (NaN where the series had
not started). Training builds that matrix for many origins of one series, serving for the last
origin of many series at once; both go through :func:`windows_from_history`, so the model sees
exactly the same features in training and in production.

- ``context``: the last ``CONTEXT_STEPS`` values divided by the series scale, with the calendar
  (time of day and day of week as sine/cosine) of each step;
- ``future``: for each of the ``horizon`` steps, the value one day and one week earlier (scaled;
  the daily one stands in for the weekly one, with a flag, while less than a week is known), the
  step's time of day, and the operator's known-future event flag;
- ``summary``: where the series stands now (the last value, the mean of the last three, three
  exponentially weighted means of the context) and how it behaves (quantiles and the maximum of the
  last day, the spread of its step-to-step changes, the mean and maximum of the last week), and
  how close to its size it runs (the size in units of the scale: a ceiling demand can barely
  pass). A three-hour context cannot tell how often a VM spikes; these can, and the upper quantiles need it;
- ``static``: the VM's size (log), and the metric, workload class, customer and the series itself
  as ids for the model's embeddings (a series the model never saw has a neutral embedding);
- ``scale``: the mean of the last day (floored at 1% of the VM's size), so that one model serves
  VMs of every size and metric; the model forecasts multiples of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from presculpt.coordinator.forecast.base import DAY_STEPS, STEP_S, WEEK_STEPS

CONTEXT_STEPS = 36  # three hours of 5-minute steps (the summary covers the last day and week)
LOOKBACK = WEEK_STEPS  # values before an origin that its features may use
MIN_HISTORY = CONTEXT_STEPS + DAY_STEPS  # fewer known values than this: a cold-start forecast
CONTEXT_FEATURES = 5
FUTURE_FEATURES = 6
EWMA_ALPHAS = (0.5, 0.2, 0.05)  # exponentially weighted means of the context (newest weighs most)
DAY_QUANTILES = (0.1, 0.5, 0.9, 0.99)
SUMMARY_FEATURES = 2 + len(EWMA_ALPHAS) + len(DAY_QUANTILES) + 6
SCALED_CLIP = 50.0  # a value this many times the daily mean is clipped (spikes stay spikes)
METRIC_IDS = {"cpu_cores": 0, "memory_mib": 1}
# History matrices are float32: serving 10,000 series holds 10,000 x LOOKBACK of them, and the
# model computes in float32 anyway.
HISTORY_DTYPE = np.float32


@dataclass
class Windows:
    """Inputs (and targets, when known) of N forecast origins."""

    context: np.ndarray  # (N, CONTEXT_STEPS, CONTEXT_FEATURES) float32
    future: np.ndarray  # (N, H, FUTURE_FEATURES) float32
    size: np.ndarray  # (N, 1) float32
    summary: np.ndarray  # (N, SUMMARY_FEATURES) float32
    metric: np.ndarray  # (N,) int64
    workload_class: np.ndarray  # (N,) int64, 0 = unknown
    customer: np.ndarray  # (N,) int64, 0 = unknown
    series: np.ndarray  # (N,) int64, a hash bucket of the series key
    scale: np.ndarray  # (N,) float64
    # (N,) float64, in the metric's units: the most the series can reach, its VM's size or, where it
    # went above that (CPU time counted slightly over the vCPUs), the highest value of the last
    # week; inf where the size is unknown. Forecasts are clipped to it.
    ceiling: np.ndarray
    target: np.ndarray | None = None  # (N, H) float64, in the metric's units

    FIELDS = ("context", "future", "size", "summary", "metric", "workload_class", "customer", "series", "scale",
              "ceiling")

    def __len__(self) -> int:
        return len(self.scale)

    def take(self, index: np.ndarray) -> "Windows":
        return Windows(*(getattr(self, f)[index] for f in self.FIELDS),
                       target=None if self.target is None else self.target[index])

    @staticmethod
    def concat(parts: list["Windows"]) -> "Windows":
        targets = [p.target for p in parts]
        return Windows(*(np.concatenate([getattr(p, f) for p in parts]) for f in Windows.FIELDS),
                       target=None if any(t is None for t in targets) else np.concatenate(targets))


def calendar(ts: np.ndarray) -> np.ndarray:
    """(..., 4): sine and cosine of the time of day and of the day of the week. Rows of ``ts``
    that repeat (all series forecast at once share their origin) are computed once."""
    if ts.ndim == 2 and len(ts) > 1:
        unique, inverse = np.unique(ts[:, 0], return_inverse=True)
        if len(unique) < len(ts) // 2:
            offsets = ts[0] - ts[0, 0]
            return calendar(unique[:, None] + offsets[None, :])[inverse]
    day = 2 * np.pi * (ts % 86400.0) / 86400.0
    week = 2 * np.pi * ((ts // 86400.0) % 7) / 7.0
    return np.stack([np.sin(day), np.cos(day), np.sin(week), np.cos(week)], axis=-1)


def fill_rows(matrix: np.ndarray) -> np.ndarray:
    """Forward-fill NaN along each row; NaN before a row's first known value stays NaN."""
    rows = np.flatnonzero(np.isnan(matrix).any(axis=1))
    if not len(rows):
        return matrix
    part = matrix[rows]
    mask = np.isnan(part)
    index = np.where(~mask, np.arange(matrix.shape[1])[None, :], 0)
    np.maximum.accumulate(index, axis=1, out=index)
    filled = np.take_along_axis(part, index, axis=1)
    filled[np.cumsum(~mask, axis=1) == 0] = np.nan
    out = matrix.copy()
    out[rows] = filled
    return out


def history_matrix(values: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """(N, LOOKBACK): for each origin, the LOOKBACK values before it, NaN before the series starts."""
    x = np.asarray(values, dtype=HISTORY_DTYPE)
    padded = np.concatenate([np.full(LOOKBACK, np.nan, dtype=HISTORY_DTYPE), x])
    return sliding_window_view(padded, LOOKBACK)[np.asarray(origins, dtype=np.int64)]


def windows_from_history(
    history: np.ndarray,
    origin_ts: np.ndarray,
    horizon: int,
    metric: np.ndarray,
    capacity: np.ndarray,
    workload_class: np.ndarray,
    customer: np.ndarray,
    series: np.ndarray,
    events: np.ndarray | None = None,
    step_s: float = STEP_S,
) -> Windows:
    """Windows of N origins from their history rows (N, LOOKBACK) with at least MIN_HISTORY
    known values at the end of each row and no NaN after the first known one.

    ``origin_ts`` (N,) is the start time of each origin's first forecast step; ``capacity`` (N,)
    the VM's size in the metric's units (NaN or 0: unknown); ``events`` (N, horizon) flags
    operator-declared event steps.
    """
    n = len(history)
    if history.shape[1] != LOOKBACK:
        raise ValueError(f"history rows must hold {LOOKBACK} values")
    capacity = np.nan_to_num(np.asarray(capacity, dtype=np.float64), nan=0.0)
    day = history[:, -DAY_STEPS:]
    # Rows are NaN only before their first known value (see fill_rows).
    known = LOOKBACK - np.isnan(history).argmin(axis=1)
    observed_max = np.nan_to_num(np.fmax.reduce(history, axis=1), nan=0.0)
    floor = 0.01 * np.where(capacity > 0, capacity, observed_max)
    scale = np.maximum(day.mean(axis=1), np.maximum(floor, 1e-6))
    inverse = (1.0 / scale)[:, None]

    def scaled(part: np.ndarray) -> np.ndarray:
        return np.minimum(part * inverse, SCALED_CLIP)

    ctx = scaled(history[:, -CONTEXT_STEPS:])
    ctx_ts = origin_ts[:, None] + step_s * (np.arange(CONTEXT_STEPS)[None, :] - CONTEXT_STEPS)
    context = np.concatenate([ctx[..., None], calendar(ctx_ts)], axis=-1)

    day_scaled = scaled(day)
    daily = day_scaled[:, :horizon]
    weekly = scaled(history[:, LOOKBACK - WEEK_STEPS:LOOKBACK - WEEK_STEPS + horizon])
    has_week = ~np.isnan(weekly[:, :1])
    weekly = np.where(has_week, weekly, daily)
    fut_ts = origin_ts[:, None] + step_s * np.arange(horizon)[None, :]
    event = np.zeros((n, horizon)) if events is None else np.asarray(events, dtype=np.float64)
    future = np.concatenate([
        daily[..., None], weekly[..., None], np.broadcast_to(has_week[:, None, :], (n, horizon, 1)),
        calendar(fut_ts)[..., :2], event[..., None],
    ], axis=-1)

    ewmas = [ctx @ (a * (1 - a) ** np.arange(CONTEXT_STEPS - 1, -1, -1)) for a in EWMA_ALPHAS]
    day_quantiles = np.quantile(day_scaled, DAY_QUANTILES, axis=1).T
    week_mean = np.sum(history, axis=1, where=~np.isnan(history)) / np.maximum(known, 1) / scale
    week_max = np.minimum(observed_max / scale, SCALED_CLIP)
    summary = np.column_stack([
        ctx[:, -1], ctx[:, -3:].mean(axis=1), *ewmas,
        day_quantiles, day_scaled.max(axis=1), np.diff(day_scaled, axis=1).std(axis=1),
        np.minimum(week_mean, SCALED_CLIP), week_max,
        # The VM's size in units of the scale: demand cannot rise far above it (0: size unknown).
        np.minimum(capacity / scale, 1000.0), np.where(capacity > 0, 1.0, 0.0),
    ])
    return Windows(
        context=context.astype(np.float32),
        future=future.astype(np.float32),
        size=np.log1p(capacity)[:, None].astype(np.float32),
        summary=np.log1p(np.maximum(summary, 0.0)).astype(np.float32),
        metric=np.asarray(metric, dtype=np.int64),
        workload_class=np.asarray(workload_class, dtype=np.int64),
        customer=np.asarray(customer, dtype=np.int64),
        series=np.asarray(series, dtype=np.int64),
        scale=scale,
        ceiling=np.where(capacity > 0, np.maximum(capacity, observed_max), np.inf),
    )


def make_windows(
    values: np.ndarray,
    start_ts: float,
    origins: np.ndarray,
    horizon: int,
    metric: str,
    capacity: float | None = None,
    workload_class: int = 0,
    customer: int = 0,
    events: np.ndarray | None = None,
    with_target: bool = False,
    series: int = 0,
    step_s: float = STEP_S,
) -> Windows:
    """Windows of one series (no NaN) for the forecast origins ``origins`` (indices into values).

    Every origin needs ``MIN_HISTORY`` values before it (and ``horizon`` after it with targets).
    ``events`` (aligned with values, optionally longer by up to the horizon) flags known-future
    event steps.
    """
    x = np.asarray(values, dtype=np.float64)
    origins = np.asarray(origins, dtype=np.int64)
    n = len(origins)
    if n and (origins.min() < MIN_HISTORY or (with_target and origins.max() + horizon > len(x))):
        raise ValueError("origins need MIN_HISTORY values before them (and the horizon after, with targets)")
    event = None
    if events is not None:
        ev = np.concatenate([np.asarray(events, dtype=np.float64), np.zeros(len(x) + horizon)])
        event = sliding_window_view(ev[:len(x) + horizon], horizon)[origins]
    w = windows_from_history(
        history_matrix(x, origins), start_ts + step_s * origins.astype(np.float64), horizon,
        np.full(n, METRIC_IDS.get(metric, 0)), np.full(n, capacity or 0.0), np.full(n, workload_class),
        np.full(n, customer), np.full(n, series), event, step_s)
    if with_target:
        w.target = sliding_window_view(x, horizon)[origins].copy()
    return w
