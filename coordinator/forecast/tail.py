"""Each series' own upper tail: how far its demand has risen above its recent peak, last week.

The LSTM learns one model of all series with the pinball loss; its middle quantiles are good, but
its upper ones are calibrated on average over the fleet, not per VM: a VM whose bursts are sharper
than most is under-provisioned at p99, a steady one over-provisioned. Planning lives in that tail.
So the upper levels of each forecast are replaced by the series' own empirical record:

    ratio(t, h) = demand(t + h) / max(demand(t - BASE_STEPS) .. demand(t - 1))

over the last week of the series (at least a day of it), one distribution per horizon step; the
forecast's level ``p`` at step ``h`` is the ratio's ``p`` quantile times the recent peak now,
clipped to the most the series can reach (its capacity, or the most it reached in that week).
Below the lowest tail level the model's own quantiles are kept. Pure numpy, causal by
construction: only values before the forecast origin are read.

The coordinator's forecast job calls :func:`calibrate_tail` on every forecast; a replay calls
:func:`ratio_quantiles` and :func:`apply_tail` directly, refreshing the ratios once a day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from presculpt.coordinator.forecast.base import DAY_STEPS, WEEK_STEPS, QuantileForecast, SeriesHistory

TAIL_LEVELS: tuple[float, ...] = (0.9, 0.99, 0.995, 0.999)
BASE_STEPS = 6  # the recent peak: the last half hour
HISTORY_STEPS = WEEK_STEPS
MIN_HISTORY_STEPS = DAY_STEPS
BASE_FLOOR_FRACTION = 0.01  # a recent peak below 1% of the capacity counts as 1% (no division by ~0)


@dataclass(frozen=True)
class TailConfig:
    levels: tuple[float, ...] = TAIL_LEVELS
    base_steps: int = BASE_STEPS
    history_steps: int = HISTORY_STEPS
    min_history_steps: int = MIN_HISTORY_STEPS
    metrics: tuple[str, ...] = ("cpu_cores",)  # memory keeps the model's tail (it rarely jumps)

    def __post_init__(self) -> None:
        if not self.levels or list(self.levels) != sorted(set(self.levels)) or not 0 < self.levels[0] < self.levels[-1] < 1:
            raise ValueError(f"tail levels must be increasing, inside (0, 1), at least two: {self.levels}")
        if min(self.base_steps, self.min_history_steps) < 1 or self.history_steps < self.min_history_steps:
            raise ValueError("tail base_steps and min_history_steps must be positive, history_steps at least "
                             "min_history_steps")

    def levels_for(self, quantiles: Sequence[float], metric: str) -> tuple[float, ...]:
        """The levels of a ``metric`` forecast made at ``quantiles`` once its tail is applied."""
        if metric not in self.metrics:
            return tuple(quantiles)
        return tuple(q for q in quantiles if q < self.levels[0]) + tuple(self.levels)


def base_floor(values: np.ndarray, capacity: float | None) -> float:
    top = capacity if capacity and capacity > 0 else float(np.nanmax(values, initial=0.0))
    return max(BASE_FLOOR_FRACTION * top, 1e-9)


def tail_ceiling(values: np.ndarray, capacity: float | None, config: "TailConfig") -> float:
    """The most the series can reach: its capacity, or the most it reached in the last
    ``history_steps`` of ``values`` where that is higher (CPU time counted slightly above the vCPUs)."""
    return max(capacity or 0.0, float(np.nanmax(values[-config.history_steps:], initial=0.0)))


def recent_peak(values: np.ndarray, base_steps: int, floor: float) -> float:
    """The peak of the last ``base_steps`` values (NaN ignored), at least ``floor``."""
    return max(float(np.nanmax(values[-base_steps:], initial=0.0)), floor)


def ratio_quantiles(values: np.ndarray, horizon: int, config: TailConfig = TailConfig(),
                    capacity: float | None = None) -> np.ndarray | None:
    """Quantiles (``config.levels``) of demand ``h`` steps ahead over the recent peak, from the
    last ``history_steps`` of ``values`` (oldest first): ``(horizon, len(levels))``. None with
    less than ``min_history_steps`` of known ratios."""
    values = np.asarray(values, dtype=np.float64)
    b, hz = config.base_steps, horizon
    span = values[-(config.history_steps + b + hz - 1):]
    origins = len(span) - b - hz + 1  # t = b .. len - hz: base from span[t-b:t], demand span[t:t+hz]
    if origins < config.min_history_steps:
        return None
    floor = base_floor(span, capacity)
    windows = np.lib.stride_tricks.sliding_window_view(span, b + hz)[:origins]
    with np.errstate(all="ignore"):
        base = np.fmax(np.nanmax(np.where(np.isnan(windows[:, :b]), -np.inf, windows[:, :b]), axis=1), floor)
    ratios = windows[:, b:] / base[:, None]  # (origins, horizon)
    known = ~np.isnan(ratios).any(axis=1)
    if known.sum() < config.min_history_steps:
        return None
    return np.quantile(ratios[known], config.levels, axis=0).T


def apply_tail(values: np.ndarray, quantiles: Sequence[float], ratios: np.ndarray, peak: float | np.ndarray,
               ceiling: float, config: TailConfig = TailConfig()) -> tuple[tuple[float, ...], np.ndarray]:
    """A forecast ``values`` (horizon, len(quantiles)) with its levels from ``config.levels[0]`` up
    replaced by ``peak x ratios`` (clipped to ``ceiling``): the new levels and values, non-decreasing.
    Also for many forecasts at once: ``values`` (n, horizon, len(quantiles)) with ``peak`` (n,)."""
    keep = [j for j, q in enumerate(quantiles) if q < config.levels[0]]
    horizon = values.shape[-2]
    tail = np.minimum(np.asarray(peak, dtype=np.float64)[..., None, None] * ratios[:horizon], ceiling)
    out = np.maximum.accumulate(np.concatenate([values[..., keep], tail], axis=-1), axis=-1)
    return tuple(quantiles[j] for j in keep) + tuple(config.levels), out


def calibrate_tail(history: SeriesHistory, forecast: QuantileForecast,
                   config: TailConfig = TailConfig()) -> QuantileForecast:
    """``forecast`` of ``history``'s series with the series' own upper tail; unchanged for other
    metrics than ``config.metrics`` and with less than ``min_history_steps`` of history."""
    if history.metric not in config.metrics:
        return forecast
    values = np.asarray(history.values, dtype=np.float64)
    ratios = ratio_quantiles(values, len(forecast.values), config, history.capacity)
    if ratios is None:
        return forecast
    ceiling = tail_ceiling(values, history.capacity, config)
    peak = recent_peak(values, config.base_steps, base_floor(values, history.capacity))
    levels, out = apply_tail(forecast.values, forecast.quantiles, ratios, peak, ceiling, config)
    return replace(forecast, quantiles=levels, values=out)

