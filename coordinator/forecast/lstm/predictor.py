"""The trained LSTM as a :class:`~presculpt.coordinator.forecast.base.Forecaster`.

It owns the network (in eval mode, on the CPU), its calibration and its metadata, predicts in
batches under ``no_grad``, hands series with too little history to the cold-start forecaster, and
saves and loads itself (state_dict plus hyperparameters and metadata) as one file.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from presculpt.coordinator.forecast.base import STEP_S, QuantileForecast, SeriesHistory
from presculpt.coordinator.forecast.baselines import RecentPercentileForecaster
from presculpt.coordinator.forecast.features import (
    CONTEXT_FEATURES,
    CONTEXT_STEPS,
    FUTURE_FEATURES,
    HISTORY_DTYPE,
    LOOKBACK,
    SUMMARY_FEATURES,
    METRIC_IDS,
    MIN_HISTORY,
    Windows,
    fill_rows,
    windows_from_history,
)
from presculpt.coordinator.forecast.lstm.module import ModelConfig, QuantileLSTM
from presculpt.coordinator.forecast.lstm.training import predict_scaled
from presculpt.coordinator.forecast.nextstep import NextStepTail

FORMAT_VERSION = 2
# What a checkpoint's network expects of its inputs: a model trained on other features cannot load.
FEATURES = {"context_steps": CONTEXT_STEPS, "context": CONTEXT_FEATURES, "future": FUTURE_FEATURES,
            "summary": SUMMARY_FEATURES, "lookback": LOOKBACK}


def category_id(name: str, buckets: int) -> int:
    """A stable id in 1..buckets-1 for a workload class or customer name (0: unknown)."""
    return 0 if not name else 1 + zlib.crc32(name.encode()) % (buckets - 1)


class LstmForecaster:
    """Quantile forecasts from the global LSTM, calibrated on held-out data."""

    def __init__(self, model: QuantileLSTM, calibration: np.ndarray, metadata: dict[str, Any] | None = None,
                 name: str = "lstm", threads: int = 2, calibration_edges: np.ndarray | None = None,
                 next_steps: Sequence[NextStepTail] = ()):
        self.model = model.eval()
        # The learned upper tails of the next step (CPU, memory), trained with the network; a
        # metric without one had too little history with a known size.
        self.next_steps = tuple(next_steps)
        # Conformal shifts in units of the scale: (metrics, scale groups, horizon, quantiles), and
        # the scale edges between the groups (metrics, groups - 1); one group when no edges.
        calibration = np.asarray(calibration, dtype=np.float64)
        if calibration.ndim == 3:
            calibration = calibration[:, None]
        self.calibration = calibration
        if calibration_edges is None:
            calibration_edges = np.full((calibration.shape[0], calibration.shape[1] - 1), np.inf)
        self.calibration_edges = np.asarray(calibration_edges, dtype=np.float64)
        self.metadata = dict(metadata or {})
        self.name = name
        self.threads = threads
        self.quantiles = tuple(model.config.quantiles)
        self.horizon = model.config.horizon
        self.cold_start = RecentPercentileForecaster(self.quantiles, self.horizon)

    def predict_windows(self, windows: Windows) -> np.ndarray:
        """Quantiles in the metric's units: (N, horizon, quantiles), non-negative, non-crossing."""
        return self.calibrate(self.network(windows), windows)

    def network(self, windows: Windows) -> np.ndarray:
        """The network's raw output, in units of each window's scale."""
        torch.set_num_threads(self.threads)
        return predict_scaled(self.model, windows).astype(np.float64)

    def calibrate(self, scaled: np.ndarray, windows: Windows) -> np.ndarray:
        """Shift the network's quantiles by the conformal offsets of each window's metric and scale
        group, uncross them, bring them to the metric's units and clip them to each window's ceiling
        (the VM's size, or the most it reached in the last week where that was more)."""
        group = np.zeros(len(windows), dtype=np.int64)
        for m in np.unique(windows.metric):
            rows = windows.metric == m
            group[rows] = np.searchsorted(self.calibration_edges[m], windows.scale[rows])
        scaled = np.maximum.accumulate(scaled + self.calibration[windows.metric, group], axis=-1)
        # Demand cannot exceed what the VM can use: clipping keeps the quantiles ordered.
        return np.clip(scaled * windows.scale[:, None, None], 0.0, windows.ceiling[:, None, None])

    def split(self, histories: Sequence[SeriesHistory]) -> tuple[list[SeriesHistory], list[SeriesHistory]]:
        """(warm, cold): the histories with enough known values for the network, and the rest."""
        warm, cold = [], []
        for h in histories:
            known = np.count_nonzero(~np.isnan(np.asarray(h.values, dtype=np.float64)[-LOOKBACK:]))
            (warm if known >= MIN_HISTORY else cold).append(h)
        return warm, cold

    def forecasts(self, histories: Sequence[SeriesHistory], values: np.ndarray) -> list[QuantileForecast]:
        return [QuantileForecast(h.key, h.metric, h.origin, h.step_s, self.quantiles, v, self.name)
                for h, v in zip(histories, values)]

    def predict(self, histories: Sequence[SeriesHistory]) -> list[QuantileForecast]:
        """One forecast per history, in order. All warm series go through the network in one
        batch; their features are computed from one (N, LOOKBACK) history matrix at once."""
        warm, cold = self.split(histories)
        out = {id(h): f for h, f in zip(cold, self.cold_start.predict(cold))}
        if warm:
            windows = self.windows(warm)
            out.update(zip(map(id, warm), self.forecasts(warm, self.calibrate(self.network(windows), windows))))
        return [out[id(h)] for h in histories]

    def windows(self, histories: Sequence[SeriesHistory]) -> Windows:
        """The model inputs of each history's next origin."""
        n = len(histories)
        matrix = np.full((n, LOOKBACK), np.nan, dtype=HISTORY_DTYPE)
        for row, h in zip(matrix, histories):
            values = np.asarray(h.values, dtype=np.float64)[-LOOKBACK:]
            row[LOOKBACK - len(values):] = values
        events = np.zeros((n, self.horizon))
        for row, h in zip(events, histories):
            if h.events is not None:
                flags = np.asarray(h.events, dtype=np.float64)[:self.horizon]
                row[:len(flags)] = flags
        config = self.model.config
        step_s = histories[0].step_s if histories else STEP_S
        return windows_from_history(
            fill_rows(matrix), np.array([h.origin for h in histories], dtype=np.float64), self.horizon,
            np.array([METRIC_IDS.get(h.metric, 0) for h in histories]),
            np.array([h.capacity or 0.0 for h in histories], dtype=np.float64),
            np.array([category_id(h.workload_class, config.n_classes) for h in histories]),
            np.array([category_id(h.customer, config.n_customers) for h in histories]),
            np.array([category_id(h.key, config.n_series) for h in histories]),
            events, step_s)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({
            "format": FORMAT_VERSION,
            "features": FEATURES,
            "model_config": self.model.config.as_dict(),
            "state_dict": self.model.state_dict(),
            "calibration": self.calibration,
            "calibration_edges": self.calibration_edges,
            "metadata": self.metadata,
            "name": self.name,
            "next_steps": [tail.to_dict() for tail in self.next_steps],
        }, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "LstmForecaster":
        data = torch.load(Path(path), map_location="cpu", weights_only=False)
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: not a Presculpt LSTM checkpoint of format {FORMAT_VERSION}")
        if data.get("features") != FEATURES:
            raise ValueError(f"{path}: trained on other input features ({data.get('features')}) than this "
                             f"version computes ({FEATURES}); retrain it")
        config = dict(data["model_config"])
        config["quantiles"] = tuple(config["quantiles"])
        model = QuantileLSTM(ModelConfig(**config))
        model.load_state_dict(data["state_dict"])
        # Checkpoints before memory was learned hold CPU's alone, as "next_step".
        tails = data.get("next_steps") or ([data["next_step"]] if data.get("next_step") else [])
        return cls(model, data["calibration"], data["metadata"], data.get("name", "lstm"),
                   calibration_edges=data["calibration_edges"], next_steps=[NextStepTail.from_dict(t) for t in tails])
