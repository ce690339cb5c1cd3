"""Rolling-origin backtest on a trace in the canonical format, LSTM against the baselines.

Each series (one metric of one VM) is split at ``train_days`` after its own first sample. The
LSTM trains on the windows before the split (its last ``validation_days`` held out for early
stopping and calibration); every origin after the split is then forecast by every model with data
before that origin only, for steps 1 to ``horizon``. Scores, per model and metric:

- pinball: the mean pinball loss over the quantile levels, steps, origins and series (units of
  the metric: cores, MiB);
- mase: the mean absolute error of the median divided by the in-sample MAE of the one-day
  seasonal naive rule on the training part, averaged over series;
- coverage_p90 / coverage_p99: the share of outcomes at or below those quantiles.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from presculpt.coordinator.forecast import baselines
from presculpt.coordinator.forecast.base import DAY_STEPS, HORIZON, QUANTILES, STEP_S, WEEK_STEPS, forward_fill
from presculpt.coordinator.forecast.features import MIN_HISTORY, METRIC_IDS, Windows, make_windows
from presculpt.coordinator.forecast.lstm.module import ModelConfig
from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster, category_id
from presculpt.coordinator.forecast.lstm.training import (
    TrainConfig,
    conformal_offsets,
    fit,
    predict_scaled,
    scaled_target,
)
from presculpt.coordinator.forecast.nextstep import DEFAULT_CONFIGS, NextStepConfig, NextStepTail
from presculpt.errors import UserError
from presculpt.lab.trace import TraceError, load_trace

log = logging.getLogger(__name__)

BASELINES = ("seasonal_naive_day", "seasonal_naive_week", "exp_smoothing", "recent_percentile")
TRAIN_STRIDE = 3  # training windows start every 3rd origin (neighbours are nearly identical)
MAX_TRAIN_WINDOWS = 600_000  # about 0.7 GB of inputs; larger traces are sampled more sparsely


@dataclass(frozen=True)
class Series:
    key: str
    metric: str
    values: np.ndarray  # gaps forward-filled
    start_ts: float
    capacity: float | None
    train_end: int  # index of the first step after the training part
    workload_class: str = ""  # where known (learned as embeddings)
    customer: str = ""
    # Operator-declared event steps (1.0 inside an event), aligned with values; None: no calendar.
    events: np.ndarray | None = None

    def windows(self, origins: np.ndarray, horizon: int, config: ModelConfig, with_target: bool = False
                ) -> Windows:
        return make_windows(self.values, self.start_ts, origins, horizon, self.metric, self.capacity,
                            category_id(self.workload_class, config.n_classes),
                            category_id(self.customer, config.n_customers), self.events, with_target=with_target,
                            series=category_id(self.key, config.n_series))


def trace_series(trace_dir: str | Path, train_days: float) -> list[Series]:
    """Every VM's CPU series, and its memory series where the trace has memory."""
    try:
        traces = load_trace(trace_dir)
    except TraceError as err:
        raise UserError(str(err)) from None
    train_steps = int(round(train_days * 86400 / STEP_S))
    out = []
    for vm_id, t in sorted(traces.items()):
        start = float(t.ts[0]) if len(t.ts) else 0.0
        cpu = forward_fill(np.asarray(t.cpu_cores, dtype=np.float64))
        out.append(Series(f"{vm_id}/cpu_cores", "cpu_cores", cpu, start, float(t.max_vcpus), train_steps))
        mem = np.asarray(t.mem_mib, dtype=np.float64)
        if t.has_memory and np.count_nonzero(~np.isnan(mem)) > len(mem) // 2:
            out.append(Series(f"{vm_id}/memory_mib", "memory_mib", forward_fill(mem), start,
                              float(t.max_mem_mib) if t.max_mem_mib else None, train_steps))
    if not out:
        raise UserError(f"{trace_dir}: the trace holds no series")
    return out


def training_windows(series: Sequence[Series], config: ModelConfig, validation_days: float,
                     stride: int = TRAIN_STRIDE, max_windows: int = MAX_TRAIN_WINDOWS
                     ) -> tuple[Windows, Windows]:
    """Training and validation windows of every series. Origins are taken every ``stride`` steps
    (neighbours are nearly identical), more sparsely on a trace so large that more than
    ``max_windows`` would not fit in memory; validation uses every origin of the held-out tail
    (within the same cap)."""
    horizon = config.horizon
    val_steps = int(validation_days * DAY_STEPS)
    ends = [min(s.train_end, len(s.values)) for s in series]
    train_total = sum(max(0, end - val_steps - horizon + 1 - MIN_HISTORY) for end in ends)
    train_stride = max(stride, math.ceil(train_total / max_windows))
    val_stride = max(1, math.ceil(len(series) * val_steps / max_windows))
    train_parts, val_parts = [], []
    for s, end in zip(series, ends):
        val_start = end - val_steps
        train_origins = np.arange(MIN_HISTORY, val_start - horizon + 1, train_stride)
        val_origins = np.arange(max(val_start, MIN_HISTORY), end - horizon + 1, val_stride)
        for origins, parts in ((train_origins, train_parts), (val_origins, val_parts)):
            if len(origins):
                parts.append(s.windows(origins, horizon, config, with_target=True))
    if not train_parts or not val_parts:
        raise UserError("the trace is too short to train on: each VM needs more than "
                        f"{(MIN_HISTORY + val_steps + 2 * horizon) / DAY_STEPS:.1f} days before the split")
    return Windows.concat(train_parts), Windows.concat(val_parts)


def train_lstm(series: Sequence[Series], model_config: ModelConfig, train_config: TrainConfig,
               validation_days: float = 2.0, initial_state: dict | None = None,
               next_steps: Sequence[NextStepConfig] = DEFAULT_CONFIGS) -> tuple[LstmForecaster, dict]:
    """Train and calibrate the global LSTM on the training parts of ``series``, and with it the
    learned tails of the next step of ``next_steps`` (CPU, memory; empty: none)."""
    started = time.monotonic()
    train, validation = training_windows(series, model_config, validation_days)
    log.info("training on %d windows, validating on %d", len(train), len(validation))
    model, report = fit(train, validation, model_config, train_config, initial_state)
    offsets, edges = conformal_offsets(predict_scaled(model, validation), scaled_target(validation),
                                       validation.metric, validation.scale, model_config.quantiles,
                                       model_config.n_metrics)
    log.info("trained in %.0f s (best epoch %d of %d)", time.monotonic() - started, report.best_epoch,
             report.epochs_run)
    tails = [t for t in (NextStepTail.fit(series, c, train_config.threads) for c in next_steps) if t is not None]
    seconds = time.monotonic() - started
    metadata = {"train_seconds": seconds, "epochs": report.epochs_run, "best_epoch": report.best_epoch,
                "validation_loss": report.validation_loss, "train_windows": len(train),
                "next_step": {t.metric: t.metadata for t in tails}}
    return LstmForecaster(model, offsets, metadata, calibration_edges=edges, next_steps=tails), metadata


@dataclass
class Score:
    """Running sums of one model on one metric."""

    quantiles: tuple[float, ...]
    horizon: int
    loss_by_step: np.ndarray = field(default=None)  # type: ignore[assignment]
    count_by_step: np.ndarray = field(default=None)  # type: ignore[assignment]
    covered: np.ndarray = field(default=None)  # type: ignore[assignment]
    mase_per_series: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.loss_by_step = np.zeros(self.horizon)
        self.count_by_step = np.zeros(self.horizon)
        self.covered = np.zeros(len(self.quantiles))

    def add(self, predicted: np.ndarray, actual: np.ndarray, mase_scale: float) -> None:
        """``predicted`` (N, H, Q), ``actual`` (N, H) of one series."""
        levels = np.asarray(self.quantiles)
        error = actual[..., None] - predicted
        loss = np.maximum(levels * error, (levels - 1) * error).mean(axis=-1)  # (N, H)
        self.loss_by_step += loss.sum(axis=0)
        self.count_by_step += len(actual)
        self.covered += (actual[..., None] <= predicted).sum(axis=(0, 1))
        median = predicted[..., self.quantiles.index(0.5)] if 0.5 in self.quantiles else predicted.mean(-1)
        self.mase_per_series.append(float(np.abs(actual - median).mean() / mase_scale))

    def result(self) -> dict[str, Any]:
        n = self.count_by_step.sum()
        by_step = self.loss_by_step / np.maximum(self.count_by_step, 1)
        out: dict[str, Any] = {
            "pinball": float(self.loss_by_step.sum() / max(n, 1)),
            "mase": float(np.mean(self.mase_per_series)) if self.mase_per_series else None,
            "pinball_by_horizon": [round(float(v), 6) for v in by_step],
            "forecasts": int(n),
        }
        for level, name in ((0.9, "coverage_p90"), (0.99, "coverage_p99")):
            if level in self.quantiles:
                out[name] = float(self.covered[self.quantiles.index(level)] / max(n, 1))
        return out


def backtest(forecaster: LstmForecaster, series: Sequence[Series], start: int | None = None,
             horizon: int | None = None) -> dict[str, Any]:
    """Score ``forecaster`` on every origin from ``start`` (default: each series' ``train_end``)
    to the end of each series, with data before each origin only. CPU and memory are scored
    apart: ``{metric: Score.result()}``; ``pinball`` in each is what the promotion rule compares."""
    horizon = horizon or forecaster.horizon
    scores: dict[str, Score] = {}
    for s in series:
        first = s.train_end if start is None else start
        origins = np.arange(max(first, MIN_HISTORY), len(s.values) - horizon + 1)
        if not len(origins):
            continue
        windows = s.windows(origins, horizon, forecaster.model.config)
        actual = np.lib.stride_tricks.sliding_window_view(s.values, horizon)[origins]
        score = scores.setdefault(s.metric, Score(forecaster.quantiles, horizon))
        score.add(forecaster.predict_windows(windows)[:, :horizon], actual, mase_scale(s.values, first))
    return {metric: score.result() for metric, score in scores.items()}


def mase_scale(values: np.ndarray, train_end: int) -> float:
    """In-sample MAE of the one-day seasonal naive rule on the training part."""
    x = values[:train_end]
    if len(x) <= DAY_STEPS:
        return float(np.mean(np.abs(np.diff(x)))) + 1e-9 if len(x) > 1 else 1.0
    return float(np.mean(np.abs(x[DAY_STEPS:] - x[:-DAY_STEPS]))) + 1e-9


def run_evaluation(trace_dir: str | Path, train_days: float = 21.0, horizon: int = HORIZON,
                   quantiles: tuple[float, ...] = QUANTILES, train_config: TrainConfig = TrainConfig(),
                   validation_days: float = 2.0, plot: str | Path | None = None,
                   progress: Callable[[str], None] = log.info, model_config: ModelConfig | None = None,
                   save_model: str | Path | None = None) -> dict[str, Any]:
    """Backtest the LSTM and the baselines on a trace (see the module's docstring). ``save_model``
    keeps the trained LSTM as a checkpoint (a coordinator can start from it)."""
    series = trace_series(trace_dir, train_days)
    tested = [s for s in series if len(s.values) >= s.train_end + horizon and s.train_end >= MIN_HISTORY]
    if not tested:
        raise UserError(f"{trace_dir}: no VM has data after its first {train_days:g} days to test on")
    progress(f"{len(series)} series ({sum(s.metric == 'cpu_cores' for s in series)} CPU); "
             f"training the LSTM on the first {train_days:g} days")
    model_config = model_config or ModelConfig()
    model_config = replace(model_config, horizon=horizon, quantiles=tuple(quantiles))
    forecaster, meta = train_lstm(series, model_config, train_config, validation_days)
    if save_model:
        forecaster.metadata.update(trace=str(trace_dir), train_days=train_days)
        forecaster.save(save_model)
        progress(f"saved the trained model to {save_model}")
    names = ("lstm", *BASELINES)
    metrics = sorted({s.metric for s in tested}, key=lambda m: METRIC_IDS.get(m, 9))
    scores = {(n, m): Score(quantiles, horizon) for n in names for m in metrics}
    infer_seconds, infer_windows = 0.0, 0
    plots: list[dict[str, Any]] = []
    for i, s in enumerate(tested):
        origins = np.arange(s.train_end, len(s.values) - horizon + 1)
        actual = np.lib.stride_tricks.sliding_window_view(s.values, horizon)[origins]
        scale = mase_scale(s.values, s.train_end)
        t0 = time.monotonic()
        windows = s.windows(origins, horizon, model_config)
        predicted = {"lstm": forecaster.predict_windows(windows)}
        infer_seconds += time.monotonic() - t0
        infer_windows += len(origins)
        predicted["seasonal_naive_day"] = baselines.seasonal_naive(
            s.values, s.train_end, origins, horizon, DAY_STEPS, quantiles)
        predicted["seasonal_naive_week"] = baselines.seasonal_naive(
            s.values, s.train_end, origins, horizon, WEEK_STEPS, quantiles)
        predicted["exp_smoothing"] = baselines.exponential_smoothing(s.values, s.train_end, origins, horizon,
                                                                     quantiles)
        predicted["recent_percentile"] = baselines.recent_percentile(s.values, origins, horizon, quantiles)
        for name in names:
            scores[(name, s.metric)].add(predicted[name], actual, scale)
        if plot and s.metric == "cpu_cores" and len(plots) < 4 and i % 7 == 0:
            plots.append({"key": s.key, "origins": origins, "actual": s.values, "start_ts": s.start_ts,
                          "lstm": predicted["lstm"], "train_end": s.train_end})
        if (i + 1) % 20 == 0:
            progress(f"backtested {i + 1}/{len(tested)} series")
    result: dict[str, Any] = {
        "trace": str(trace_dir),
        "series": len(tested),
        "horizon": horizon,
        "quantiles": list(quantiles),
        "train_days": train_days,
        "train_seconds": round(meta["train_seconds"], 1),
        "infer_ms_per_1000_series": round(1000 * infer_seconds / max(infer_windows, 1) * 1000, 2),
        "models": {},
    }
    for name in names:
        entry = dict(scores[(name, "cpu_cores")].result()) if "cpu_cores" in metrics else {}
        if "memory_mib" in metrics:
            entry["memory"] = scores[(name, "memory_mib")].result()
        result["models"][name] = entry
    if plot:
        draw(plots, quantiles, plot)
    return result


def improvement(result: dict[str, Any], metric: str | None = None) -> tuple[str, float]:
    """The best baseline and how much lower the LSTM's pinball loss is than its (fraction)."""
    def loss(name: str) -> float:
        entry = result["models"][name]
        return (entry[metric] if metric else entry)["pinball"]

    best = min(BASELINES, key=loss)
    return best, 1.0 - loss("lstm") / loss(best)


def draw(plots: list[dict[str, Any]], quantiles: tuple[float, ...], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(plots) or 1, 1, figsize=(11, 2.6 * max(1, len(plots))), squeeze=False)
    lo, mid, hi = (quantiles.index(q) for q in (0.1, 0.5, 0.9))
    for ax, p in zip(axes[:, 0], plots):
        show = slice(-2 * DAY_STEPS, None)  # the last two days of the test part
        origins = p["origins"][show]
        hours = (origins - origins[0]) * STEP_S / 3600
        first_step = p["lstm"][show, 0, :]
        ax.fill_between(hours, first_step[:, lo], first_step[:, hi], alpha=0.3, label="LSTM p10-p90")
        ax.plot(hours, first_step[:, mid], lw=0.8, label="LSTM median")
        if 0.99 in quantiles:
            ax.plot(hours, first_step[:, quantiles.index(0.99)], lw=0.6, ls="--", label="LSTM p99")
        ax.plot(hours, p["actual"][origins], color="black", lw=0.8, label="actual")
        ax.set_title(f"{p['key']}: 5-minute-ahead forecast band against what happened", fontsize=9)
        ax.set_ylabel("cores")
    axes[-1, 0].set_xlabel("hours")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
