"""Forecasts for a replay, made the way a coordinator would have made them: only from data before
each decision.

The LSTM is trained when the first VMs finish their warm-up (on everything before that moment)
and retrained every ``retrain_days`` on everything before the retrain, warm-started from the
previous model, as the coordinator's retrain job does. A replay may instead start from a model
trained on other traces (``initial_model``); it is then retrained on the same schedule. Steps
with too little history for the network get the cold-start forecast (recent percentiles).

The upper levels of the CPU forecasts are each VM's own empirical tail (forecast/tail.py), as the
coordinator's forecast job makes them; the ratios behind it are refreshed at the start of each
block (a day) from the week before it, the recent peak at every step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from presculpt.coordinator.forecast import baselines, nextstep
from presculpt.coordinator.forecast.base import HORIZON, QUANTILES, STEP_S, at_levels
from presculpt.coordinator.forecast.evaluate import Series, train_lstm
from presculpt.coordinator.forecast.features import MIN_HISTORY
from presculpt.coordinator.forecast.lstm.module import ModelConfig
from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster
from presculpt.coordinator.forecast.lstm.training import TrainConfig
from presculpt.coordinator.forecast.tail import TailConfig, apply_tail, base_floor, ratio_quantiles, tail_ceiling
from presculpt.coordinator.replay.trace import DAY_STEPS, ReplayTrace

log = logging.getLogger(__name__)

METRICS = ("cpu_cores", "memory_mib")


@dataclass(frozen=True)
class ReplayForecastConfig:
    retrain_days: float = 7.0
    validation_days: float = 2.0
    # Shorter than the coordinator's first training: a replay trains several times.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, patience=2, threads=2))
    retrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, threads=2))
    model: ModelConfig = field(default_factory=ModelConfig)
    tail: TailConfig | None = field(default_factory=TailConfig)  # None: the model's own upper quantiles
    next_steps: tuple[nextstep.NextStepConfig, ...] = nextstep.DEFAULT_CONFIGS  # the learned next steps (): none

    def __post_init__(self) -> None:
        metrics = [learned.metric for learned in self.next_steps]
        if len(set(metrics)) != len(metrics):  # a block's levels and values come from one tail per metric
            raise ValueError(f"one learned next step per metric, got {', '.join(metrics)}")


class CausalForecasts:
    """Quantile forecasts of every VM's CPU and memory for any block of steps of a replay."""

    def __init__(self, trace: ReplayTrace, config: ReplayForecastConfig = ReplayForecastConfig(),
                 initial_model: LstmForecaster | None = None, progress: Callable[[str], None] = log.info):
        self.trace = trace
        self.config = config
        self.progress = progress
        self.model = initial_model
        self.trained_at: int | None = None  # the step the current model saw data up to
        first_ready = int(trace.first.min()) + trace.warmup_steps
        every = max(1, int(round(config.retrain_days * DAY_STEPS)))
        self.retrain_steps = list(range(first_ready, trace.steps, every))
        self.train_seconds = 0.0
        self.trainings = 0
        self._series = self._make_series()
        self._next_features: dict[str, np.ndarray] = {}

    @property
    def quantiles(self) -> tuple[float, ...]:
        return self.model.quantiles if self.model is not None else self.config.model.quantiles

    @property
    def horizon(self) -> int:
        return self.model.horizon if self.model is not None else self.config.model.horizon

    def levels(self, metric: str) -> tuple[float, ...]:
        """The quantile levels of ``metric``'s forecasts in :meth:`block`."""
        levels = self._tail_levels(metric)
        learned = next((c for c in self.config.next_steps if c.metric == metric), None)  # one per metric at most
        return levels if learned is None else tuple(sorted(set(levels) | set(learned.levels)))

    def _tail_levels(self, metric: str) -> tuple[float, ...]:
        """The levels of ``metric``'s forecasts once the empirical tail is applied (before the learned next step)."""
        tail = self.config.tail
        return self.quantiles if tail is None else tail.levels_for(self.quantiles, metric)

    def _make_series(self) -> list[tuple[int, Series]]:
        out = []
        memory_known = self.trace.has_memory()
        for i, vm in enumerate(self.trace.vm_ids):
            lo, hi = int(self.trace.first[i]), int(self.trace.last[i]) + 1
            start_ts = float(self.trace.start_ts + lo * STEP_S)
            out.append((i, Series(f"{vm}/cpu_cores", "cpu_cores", self.trace.cpu[i, lo:hi], start_ts,
                                  float(self.trace.max_vcpus[i]), 0)))
            if memory_known[i]:
                mem = self.trace.memory[i, lo:hi]
                if np.isnan(mem).any():  # leading unknowns: the first known value
                    known = mem[~np.isnan(mem)]
                    mem = np.where(np.isnan(mem), known[0], mem)
                out.append((i, Series(f"{vm}/memory_mib", "memory_mib", mem, start_ts,
                                      float(self.trace.max_mem_mib[i]), 0)))
        return out

    def _train(self, step: int) -> None:
        """Train (or retrain) on every series' data before global step ``step``."""
        series = [replace(s, train_end=step - int(self.trace.first[i])) for i, s in self._series]
        need = MIN_HISTORY + int(self.config.validation_days * DAY_STEPS) + 2 * HORIZON
        series = [s for s in series if s.train_end >= need]
        if not series:
            return
        warm = self.model is not None
        self.progress(f"{'retraining' if warm else 'training'} the forecaster on data before day "
                      f"{step / DAY_STEPS:.1f} ({len(series)} series)")
        model_config = self.model.model.config if warm else replace(
            self.config.model, horizon=HORIZON, quantiles=QUANTILES)
        state = self.model.model.state_dict() if warm else None
        forecaster, meta = train_lstm(series, model_config, self.config.retrain if warm else self.config.train,
                                      self.config.validation_days, initial_state=state,
                                      next_steps=self.config.next_steps)
        self.model, self.trained_at = forecaster, step
        self.train_seconds += meta["train_seconds"]
        self.trainings += 1

    def block(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Forecasts made at each step of ``[start, stop)``: ``{metric: (N, stop - start, horizon,
        quantiles)}``, NaN where a VM is not alive or has no such metric. Retrains first when the
        schedule says so (the block must not straddle a retrain step)."""
        due = [s for s in self.retrain_steps if s <= start and (self.trained_at is None or s > self.trained_at)]
        if due:
            self._train(due[-1])
        n, width = len(self.trace.vm_ids), stop - start
        out = {m: np.full((n, width, self.horizon, len(self.quantiles)), np.nan, dtype=np.float32) for m in METRICS}
        for i, s in self._series:
            lo = int(self.trace.first[i])
            origins = np.arange(max(start, lo), min(stop, int(self.trace.last[i]) + 1)) - lo
            origins = origins[origins >= 1]
            if not len(origins):
                continue
            target = out[s.metric][i]
            warm = origins >= MIN_HISTORY
            if self.model is not None and warm.any():
                windows = s.windows(origins[warm], self.horizon, self.model.model.config)
                target[origins[warm] + lo - start] = self.model.predict_windows(windows)
            cold = origins[~warm] if self.model is not None else origins
            if len(cold):
                target[cold + lo - start] = recent_levels(s.values, cold, self.quantiles)[:, None, :]
        if self.config.tail is not None:
            for metric in self.config.tail.metrics:
                out[metric] = self._with_tail(metric, out[metric], start, stop)
        for metric in (learned.metric for learned in self.config.next_steps):
            out[metric] = self._with_next_step(metric, out[metric], start, stop)
        return out

    def _with_next_step(self, metric: str, block: np.ndarray, start: int, stop: int) -> np.ndarray:
        """``block`` of ``metric`` at the levels its learned next step adds, with the upper levels
        from the model's learned tail once there is one, as the coordinator's forecast job serves them."""
        given = self._tail_levels(metric)
        levels = self.levels(metric)
        out = at_levels(block, given, levels).astype(np.float32)
        tail = next((t for t in self.model.next_steps if t.metric == metric), None) if self.model is not None else None
        if tail is None:
            return out
        for i, s in self._series:
            if s.metric != metric or not s.capacity:
                continue
            lo = int(self.trace.first[i])
            rows = np.arange(max(start, lo), min(stop, int(self.trace.last[i]) + 1)) - start
            rows = rows[~np.isnan(block[i, rows, 0, 0])]
            if not len(rows):
                continue
            if s.key not in self._next_features:  # every origin of the series at once (causal per row)
                self._next_features[s.key] = nextstep.features(s.values, s.capacity, s.start_ts)
            before = s.values[:max(0, start - lo)]
            ceiling = tail_ceiling(before, s.capacity, self.config.tail or TailConfig())
            learned = tail.predict(self._next_features[s.key][rows + start - lo], threads=self.config.train.threads)
            refined = tail.apply(block[i, rows], given, learned, s.capacity, ceiling)
            out[i, rows] = at_levels(refined, tail.levels_with(given), levels)  # a loaded model's levels
        return out

    def _with_tail(self, metric: str, block: np.ndarray, start: int, stop: int) -> np.ndarray:
        """``block`` with each VM's empirical upper tail. A VM with less than a day of history
        before the block gets no forecast (NaN): the planner leaves it as it is, at its maximum
        (its first day is inside its unscored warm-up)."""
        tail = self.config.tail
        levels = self._tail_levels(metric)
        out = np.full(block.shape[:3] + (len(levels),), np.nan, dtype=np.float32)
        for i, s in self._series:
            if s.metric != metric:
                continue
            lo = int(self.trace.first[i])
            before = s.values[:max(0, start - lo)]
            ratios = ratio_quantiles(before, self.horizon, tail, s.capacity)
            if ratios is None:
                continue
            origins = np.arange(max(start, lo + 1), min(stop, int(self.trace.last[i]) + 1)) - lo
            floor = base_floor(before, s.capacity)
            ceiling = tail_ceiling(before, s.capacity, tail)
            rows = origins + lo - start
            forecast = block[i, rows].astype(np.float64)
            known = ~np.isnan(forecast).any(axis=(1, 2))
            recent = np.lib.stride_tricks.sliding_window_view(np.concatenate([np.zeros(tail.base_steps), s.values]),
                                                              tail.base_steps)
            peak = np.maximum(recent[origins].max(axis=1), floor)  # the values before each origin
            out[i, rows[known]] = apply_tail(forecast[known], self.quantiles, ratios, peak[known], ceiling, tail)[1]
        return out


def recent_levels(values: np.ndarray, origins: np.ndarray, quantiles: tuple[float, ...],
                  window: int = baselines.RECENT_WINDOW) -> np.ndarray:
    """The cold-start forecast: quantiles of the (up to) ``window`` values before each origin."""
    out = np.empty((len(origins), len(quantiles)))
    full = origins >= window
    if full.any():
        recent = np.lib.stride_tricks.sliding_window_view(values, window)[origins[full] - window]
        out[full] = np.quantile(recent, quantiles, axis=1).T
    for k in np.flatnonzero(~full):
        out[k] = np.quantile(values[:origins[k]], quantiles)
    return out
