"""A learned upper tail of demand at the next step (CPU, and memory): gradient-boosted quantile
regression pooled over every VM.

The empirical tail (forecast/tail.py) scales each VM's recent peak by how far the VM rose above
such peaks last week, whatever state it is in now. What the next step can bring depends on that
state: a VM whose burst just ended can still re-enter it, one that sat idle for hours rarely jumps
to its maximum, one running at its peak mostly stays there. One quantile model per tail level,
learned across all VMs in units of each VM's size, reads that state from a few numbers (the last
values, the recent peaks and means, how often the VM ran hot or jumped over the last week, the
same time a day and a week ago, the time of day, the size) and gives the next step's upper levels.
On the Bitbrains trace (``presculpt replay``, README) CPU slack at 2.55% violation fell from about
41% with the empirical tail alone (42.1% at 2.54%, 40.3% at 2.56%) to 39.3% with the tail's four
levels learned; the eight levels learned now, with cost-optimal sizing that reads between them,
leave 32.2% at 2.57% (30.4% at 2.59% once the cost model reads the next step too).

For CPU only the first forecast step changes: it is the step the planner acts on at once; later
steps keep the empirical tail. Memory (:data:`MEMORY`, the same features of memory in units of the
VM's memory) replaces its upper levels at every step of the horizon: the planner provisions memory
for the most of its next steps, and the empirical tail of later steps, a week's worst jumps scaled
to the recent peak, is far wider than the learned next step (Bitbrains replay: memory slack 81.5%
at 0.042% violation with the empirical tail and 1.2x the 24-hour peak as a floor; 80.8% at 0.026%
with the learned levels and the peak itself as the floor, 78.7% at 0.035% with no floor).

:func:`features` computes the inputs of every origin of one series from the values before it, the
same way for training, for a replay and for serving.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from presculpt.coordinator.forecast.base import (DAY_STEPS, STEP_S, WEEK_STEPS, QuantileForecast, SeriesHistory,
                                                 at_levels)
from presculpt.coordinator.forecast.tail import TailConfig, tail_ceiling

log = logging.getLogger(__name__)

# The levels it learns: finer than the empirical tail's (p90, p99, p99.5, p99.9), for cost-optimal
# sizing weighs each level's probability against its cores, and between p80 and p99 is where the
# allocation of most steps lands. (Bitbrains replay, the same planner: 33.4% CPU slack at 2.57%
# violation from these levels, 34.2% at 2.57% from the tail's four.)
LEVELS: tuple[float, ...] = (0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
METRIC = "cpu_cores"
LAGS = 6
FEATURES: tuple[str, ...] = (
    *(f"last_{k}" for k in range(1, LAGS + 1)),  # utilisation 1..6 steps before the origin
    "peak_30m", "peak_3h", "peak_1d", "peak_1w",  # the most it used over those windows
    "mean_1d", "mean_1w",
    "last_over_peak_30m",  # where it stands against its recent peak: still at it, or fallen off
    "hot_1w", "very_hot_1w",  # share of last week's steps above 50% and 90% of the size
    "jumps_2x_1w", "jumps_4x_1w",  # share of last week's steps at 2x and 4x their previous 30 min peak
    "day_ago", "week_ago",  # the most it used at the origin's time a day and a week ago (+-1 step)
    "time_sin", "time_cos", "log2_size",
)
# The values before an origin that its features read: a week, and the 30 minutes before the first
# step of that week (its jump ratio).
HISTORY_STEPS = WEEK_STEPS + 6
MIN_ORIGIN = DAY_STEPS + 2 * LAGS  # a day of history before an origin takes part in training
PEAK_FLOOR = 0.01  # a 30-minute peak below 1% of the size counts as 1% (jump ratios)
# The models learn log(utilisation + LOG_OFFSET): quantiles pass through any increasing map, and on
# the log scale a tree's leaves are ratios (a VM at 2% jumps to 20% as one at 8% jumps to 80%) and
# the pinball loss weighs an idle VM's error by its size relative to its demand, which is what
# its slack is. (Bitbrains: 1 point less CPU slack at the same violation than learning
# utilisation itself.)
LOG_OFFSET = PEAK_FLOOR


def features(values: np.ndarray, capacity: float, start_ts: float, origins: np.ndarray | None = None,
             step_s: float = STEP_S) -> np.ndarray:
    """The inputs of each origin ``t`` (the step to forecast) of one series, from ``values[:t]`` only:
    (len(origins), len(FEATURES)) float32, NaN where a window holds no value yet. ``origins`` None:
    every index 0..len(values) (the last one is the next step after the data)."""
    u = np.asarray(values, dtype=np.float64) / capacity
    n = len(u) + 1  # one row per origin 0..len
    known = ~np.isnan(u)
    peak_30m = _trailing_max(u, 6)
    jump = u / np.fmax(peak_30m[:-1], PEAK_FLOOR)  # demand at t over its previous 30 min peak
    lags = [_lag(u, k, n) for k in range(1, LAGS + 1)]
    cols = [*lags, peak_30m, _trailing_max(u, 36), _trailing_max(u, DAY_STEPS), _trailing_max(u, WEEK_STEPS),
             _trailing_mean(u, DAY_STEPS), _trailing_mean(u, WEEK_STEPS)]
    with np.errstate(invalid="ignore", divide="ignore"):
        cols.append(lags[0] / np.fmax(peak_30m, PEAK_FLOOR))
    for share_of in (u > 0.5, u > 0.9, jump > 2, jump > 4):
        cols.append(_trailing_mean(np.where(known, share_of, np.nan), WEEK_STEPS))
    for back in (DAY_STEPS, WEEK_STEPS):
        cols.append(np.fmax(np.fmax(_lag(u, back - 1, n), _lag(u, back, n)), _lag(u, back + 1, n)))
    angle = 2 * np.pi * (((start_ts + np.arange(n) * step_s) % 86400) / 86400)
    cols += [np.sin(angle), np.cos(angle), np.full(n, math.log2(capacity))]
    out = np.stack(cols, axis=1).astype(np.float32)
    return out if origins is None else out[np.asarray(origins, dtype=np.int64)]


def next_features(values: np.ndarray, capacity: float, origin_ts: float, step_s: float = STEP_S) -> np.ndarray:
    """The inputs (len(FEATURES),) of the step after ``values`` (whose last value is the step
    before ``origin_ts``): the last row of :func:`features`, from the values it reads only."""
    recent = np.asarray(values, dtype=np.float64)[-HISTORY_STEPS:]
    return features(recent, capacity, origin_ts - len(recent) * step_s, np.array([len(recent)]), step_s)[0]


def _lag(u: np.ndarray, k: int, n: int) -> np.ndarray:
    """Row t: u[t - k] (NaN before the series)."""
    out = np.full(n, np.nan)
    if k <= len(u):
        out[k:] = u[:n - k]
    return out


def _trailing_max(u: np.ndarray, window: int) -> np.ndarray:
    """Row t (0..len): the most of u[t - window:t], NaN ignored (NaN when all are)."""
    from scipy.ndimage import maximum_filter1d

    padded = np.concatenate([np.full(window, -np.inf), np.where(np.isnan(u), -np.inf, u)])
    # origin (window - 1) // 2: each output is the most of the window that ends at it
    ends = maximum_filter1d(padded, size=window, origin=(window - 1) // 2)
    out = ends[window - 1:window + len(u)]  # row t ends at u[t - 1], padded[t + window - 1]
    return np.where(np.isinf(out), np.nan, out)


def _trailing_mean(u: np.ndarray, window: int) -> np.ndarray:
    """Row t (0..len): the mean of the known values of u[t - window:t] (NaN when none)."""
    known = ~np.isnan(u)
    sums = np.concatenate([[0.0], np.cumsum(np.where(known, u, 0.0))])
    counts = np.concatenate([[0], np.cumsum(known)])
    lo = np.maximum(np.arange(len(sums)) - window, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums - sums[lo]) / (counts - counts[lo])


@dataclass(frozen=True)
class NextStepConfig:
    metric: str = METRIC  # the series it learns
    levels: tuple[float, ...] = LEVELS
    log_offset: float | None = LOG_OFFSET  # learns log(utilisation + this); None: utilisation
    steps: int = 1  # the forecast steps whose learned levels it replaces (0: all of the horizon)
    # Training origins sampled from all series. Time grows with them (eight levels: about 4 s per
    # 100,000 on 2 cores), and so does accuracy: on Bitbrains 800,000 instead of 300,000 left 0.35
    # points less CPU slack at the same violation.
    max_rows: int = 1_000_000
    # Fewer origins than give the top level this many outcomes above it: no model (the empirical
    # tail stays). 100 at p99.9: 100,000 origins, a fleet's week (60 VMs) rather than a few VMs'.
    min_exceedances: int = 100
    trees: int = 150
    learning_rate: float = 0.1
    leaves: int = 31
    min_leaf: int = 100
    seed: int = 0

    @property
    def min_rows(self) -> int:
        return math.ceil(self.min_exceedances / (1 - max(self.levels)) - 1e-9)


# Memory: used memory jumps rarely but far (a week of 5-minute steps holds a few jumps past 1.5x
# the day's peak), so its levels reach p99.95; it is learned as utilisation (measured, the log was
# not), on fewer origins (each level costs as much as CPU's), with fewer outcomes above the top
# level before it is trusted (100,000 origins: a 60-VM fleet's first week).
MEMORY = NextStepConfig(metric="memory_mib", levels=(0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995),
                        log_offset=None, steps=0, max_rows=300_000, min_exceedances=50)
DEFAULT_CONFIGS: tuple[NextStepConfig, ...] = (NextStepConfig(), MEMORY)


class NextStepTail:
    """One LightGBM quantile model per level, of the next step's utilisation of ``metric`` (demand /
    size), learned as log(utilisation + ``log_offset``) (None: utilisation itself, as checkpoints
    before it); it replaces the first ``steps`` steps of a forecast (0: all)."""

    def __init__(self, levels: Sequence[float], boosters: Sequence[Any], metadata: dict[str, Any] | None = None,
                 log_offset: float | None = LOG_OFFSET, metric: str = METRIC, steps: int = 1):
        if len(levels) != len(boosters):
            raise ValueError("one booster per level")
        if log_offset is not None and not log_offset > 0:
            raise ValueError(f"the next-step tail's log offset must be positive, got {log_offset}")
        if steps < 0:
            raise ValueError(f"the next-step tail's steps must not be negative, got {steps}")
        self.metric = metric
        self.steps = steps
        self.levels = tuple(float(q) for q in levels)
        self.boosters = list(boosters)
        self.metadata = dict(metadata or {})
        self.log_offset = log_offset

    # -- training ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, series: Sequence[Any], config: NextStepConfig = NextStepConfig(), threads: int = 2
            ) -> "NextStepTail | None":
        """Train on the training part (``train_end``) of every series of ``config.metric`` with a
        known size (:class:`~presculpt.coordinator.forecast.evaluate.Series`). None: too few origins."""
        import lightgbm as lgb

        started = time.monotonic()
        rows, targets = [], []
        for s in series:
            if s.metric != config.metric or not s.capacity or s.capacity <= 0 or s.train_end <= MIN_ORIGIN:
                continue
            origins = np.arange(MIN_ORIGIN, min(s.train_end, len(s.values)))
            target = np.asarray(s.values, dtype=np.float64)[origins] / s.capacity
            keep = ~np.isnan(target)
            rows.append(features(s.values[:s.train_end], s.capacity, s.start_ts, origins[keep]))
            targets.append(target[keep])
        count = sum(len(t) for t in targets)
        if count < config.min_rows:
            log.info("next-step tail of %s not trained: %d origins of series with a known size, it needs %d "
                     "(the empirical tail serves)", config.metric, count, config.min_rows)
            return None
        x, y = np.concatenate(rows), np.concatenate(targets)
        if len(y) > config.max_rows:
            pick = np.sort(np.random.default_rng(config.seed).choice(len(y), config.max_rows, replace=False))
            x, y = x[pick], y[pick]
        params = {"objective": "quantile", "learning_rate": config.learning_rate, "num_leaves": config.leaves,
                  "min_data_in_leaf": config.min_leaf, "bagging_fraction": 0.8, "bagging_freq": 1,
                  "seed": config.seed, "num_threads": threads, "verbose": -1}
        target = y if config.log_offset is None else np.log(y + config.log_offset)
        data = lgb.Dataset(x, target, feature_name=list(FEATURES))
        boosters = [lgb.train({**params, "alpha": q}, data, config.trees) for q in config.levels]
        seconds = time.monotonic() - started
        log.info("next-step tail of %s trained on %d of %d origins in %.0f s", config.metric, len(y), count, seconds)
        return cls(config.levels, boosters, {"origins": int(len(y)), "train_seconds": round(seconds, 1)},
                   config.log_offset, config.metric, config.steps)

    # -- use -----------------------------------------------------------------------------------
    def predict(self, x: np.ndarray, threads: int = 2) -> np.ndarray:
        """Utilisation quantiles (len(x), len(levels)), non-decreasing, not negative."""
        if not len(x):
            return np.zeros((0, len(self.levels)))
        out = np.stack([b.predict(x, num_threads=threads) for b in self.boosters], axis=1)
        if self.log_offset is not None:
            out = np.exp(out) - self.log_offset
        return np.maximum.accumulate(np.maximum(out, 0.0), axis=1)

    def levels_with(self, quantiles: Sequence[float]) -> tuple[float, ...]:
        """The levels of a forecast made at ``quantiles`` once refined: the learned ones added."""
        return tuple(sorted(set(float(q) for q in quantiles) | set(self.levels)))

    def apply(self, values: np.ndarray, quantiles: Sequence[float], learned: np.ndarray, capacity: float,
              ceiling: float) -> np.ndarray:
        """Forecasts ``values`` (n, horizon, len(quantiles)) at :meth:`levels_with` ``quantiles``:
        the learned levels of the first :attr:`steps` steps from ``learned`` utilisation quantiles
        (n, len(levels)) x ``capacity``, clipped to ``ceiling``, kept non-decreasing along the
        levels; the levels ``quantiles`` lack elsewhere read between theirs
        (:func:`~presculpt.coordinator.forecast.base.at_levels`)."""
        levels = self.levels_with(quantiles)
        out = at_levels(np.asarray(values, dtype=np.float64), quantiles, levels)
        steps = slice(None, self.steps or None)
        columns = [levels.index(q) for q in self.levels]
        out[:, steps, columns] = np.minimum(learned * capacity, ceiling)[:, None, :]
        out[:, steps] = np.maximum.accumulate(out[:, steps], axis=-1)
        return out

    def refine(self, histories: Sequence[SeriesHistory], forecasts: Sequence[QuantileForecast],
               threads: int = 2) -> list[QuantileForecast]:
        """``forecasts`` of ``histories`` (in order), those of :attr:`metric` of series with a known
        size and a model forecast (not cold-start) with their upper levels learned."""
        chosen = [k for k, (h, f) in enumerate(zip(histories, forecasts, strict=True))
                  if h.metric == self.metric and h.capacity and h.capacity > 0 and not f.cold_start]
        out = list(forecasts)
        if not chosen:
            return out
        x = np.stack([next_features(histories[k].values, histories[k].capacity, histories[k].origin,
                                    histories[k].step_s) for k in chosen])
        learned = self.predict(x, threads)
        for row, k in enumerate(chosen):
            h, f = histories[k], forecasts[k]
            ceiling = tail_ceiling(np.asarray(h.values, dtype=np.float64), h.capacity, TailConfig())
            refined = self.apply(f.values[None], f.quantiles, learned[row:row + 1], h.capacity, ceiling)[0]
            out[k] = replace(f, quantiles=self.levels_with(f.quantiles), values=refined)
        return out

    # -- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "steps": self.steps, "levels": list(self.levels), "features": list(FEATURES),
                "metadata": self.metadata, "log_offset": self.log_offset,
                "boosters": [b.model_to_string() for b in self.boosters]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NextStepTail":
        import lightgbm as lgb

        if list(data.get("features", ())) != list(FEATURES):
            raise ValueError(f"the next-step tail was trained on other features ({data.get('features')}) than "
                             f"this version computes; retrain it")
        try:
            boosters = [lgb.Booster(model_str=s) for s in data["boosters"]]
        except (lgb.basic.LightGBMError, KeyError, TypeError) as err:
            raise ValueError(f"the next-step tail cannot be read: {err}") from None
        # Checkpoints before memory was learned: CPU's first step.
        return cls(data["levels"], boosters, data.get("metadata"), data.get("log_offset"),
                   data.get("metric", METRIC), data.get("steps", 1))
