"""Training the global quantile LSTM: pinball loss, early stopping on a held-out tail of the
training window, and a conformal calibration of every quantile fitted on that same tail."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from presculpt.coordinator.forecast.features import Windows
from presculpt.coordinator.forecast.lstm.module import ModelConfig, QuantileLSTM

log = logging.getLogger(__name__)


MAX_STOPPING_WINDOWS = 40_000


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 14
    batch_size: int = 128  # small batches: more updates, and per sample no slower on two cores
    learning_rate: float = 1e-3
    samples_per_epoch: int = 100_000  # drawn at random from all training windows each epoch
    patience: int = 3  # epochs without a better validation loss before stopping
    seed: int = 0
    threads: int = 1  # one thread trains about as fast as two here, and leaves a core free
    # A warm start begins near a minimum already: a smaller rate refines it instead of undoing it.
    warm_start_lr_factor: float = 0.25


@dataclass(frozen=True)
class TrainReport:
    epochs_run: int
    best_epoch: int
    validation_loss: float  # scaled pinball loss of the best epoch
    seconds: float


def tensors(w: Windows) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(w.context), torch.from_numpy(w.future), torch.from_numpy(w.size),
        torch.from_numpy(w.summary), torch.from_numpy(w.metric), torch.from_numpy(w.workload_class), torch.from_numpy(w.customer),
        torch.from_numpy(w.series),
    )


def scaled_target(w: Windows) -> np.ndarray:
    assert w.target is not None
    return (w.target / w.scale[:, None]).astype(np.float32)


def predict_scaled(model: QuantileLSTM, w: Windows, batch_size: int = 8192) -> np.ndarray:
    """Model output in units of each window's scale: (N, horizon, quantiles)."""
    model.eval()
    out = []
    with torch.no_grad():
        inputs = tensors(w)
        for start in range(0, len(w), batch_size):
            out.append(model(*(t[start:start + batch_size] for t in inputs)).numpy())
    if not out:
        return np.zeros((0, model.config.horizon, len(model.config.quantiles)), dtype=np.float32)
    return np.concatenate(out)


def fit(
    train: Windows,
    validation: Windows,
    model_config: ModelConfig,
    config: TrainConfig = TrainConfig(),
    initial_state: dict | None = None,
) -> tuple[QuantileLSTM, TrainReport]:
    """Train (warm-started from ``initial_state`` when given); returns the best epoch's model."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = QuantileLSTM(model_config)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    rate = config.learning_rate * (config.warm_start_lr_factor if initial_state is not None else 1.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=rate)
    # Cosine decay to a tenth of the rate over the planned epochs: big steps while far from a
    # minimum, small ones to settle into it.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs,
                                                          eta_min=rate / 10)
    inputs, target = tensors(train), torch.from_numpy(scaled_target(train))
    weight = torch.from_numpy(loss_weights(train))
    # Early stopping needs a loss, not every held-out window: an even subset keeps each epoch's
    # check short (the calibration uses them all).
    if len(validation) > MAX_STOPPING_WINDOWS:
        validation = validation.take(np.linspace(0, len(validation) - 1, MAX_STOPPING_WINDOWS).astype(np.int64))
    val_target, val_weight = scaled_target(validation), loss_weights(validation)
    started = time.monotonic()
    best_loss, best_epoch, best_state, stale = math.inf, 0, None, 0
    epochs_run = 0
    for epoch in range(1, config.epochs + 1):
        epochs_run = epoch
        model.train()
        order = rng.choice(len(train), size=min(config.samples_per_epoch, len(train)), replace=False)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            index = torch.from_numpy(order[start:start + config.batch_size])
            optimiser.zero_grad()
            loss = model.loss(model(*(t[index] for t in inputs)), target[index], weight[index])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            total += float(loss.detach()) * len(index)
        schedule.step()
        val_loss = scaled_pinball(predict_scaled(model, validation), val_target, model_config.quantiles, val_weight)
        log.info("epoch %d/%d: training loss %.4f, validation loss %.4f (%.0f s)", epoch, config.epochs,
                 total / len(order), val_loss, time.monotonic() - started)
        if val_loss < best_loss - 1e-5:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, TrainReport(epochs_run, best_epoch, best_loss, time.monotonic() - started)


def loss_weights(w: Windows) -> np.ndarray:
    """Each window weighs as its scale relative to its metric's mean scale, so that the scaled loss
    ranks errors as the unscaled one does (a core missed on a big VM costs what it costs on a
    small one) while the model still learns in scale-free units."""
    weights = np.ones(len(w), dtype=np.float64)
    for m in np.unique(w.metric):
        rows = w.metric == m
        weights[rows] = w.scale[rows] / w.scale[rows].mean()
    return weights.astype(np.float32)


def scaled_pinball(predicted: np.ndarray, target: np.ndarray, quantiles: tuple[float, ...],
                   weight: np.ndarray | None = None) -> float:
    """Mean pinball loss, each window weighted as in training (so that early stopping picks the
    epoch that is best in the metric's own units)."""
    if not len(target):
        return math.inf
    levels = np.asarray(quantiles)
    error = target[..., None] - predicted
    per_window = np.maximum(levels * error, (levels - 1) * error).mean(axis=(1, 2))
    return float(np.average(per_window, weights=weight))


SCALE_GROUPS = 4  # calibration groups by series scale (quartiles of the held-out windows)


def conformal_offsets(predicted: np.ndarray, target: np.ndarray, metric: np.ndarray, scale: np.ndarray,
                      quantiles: tuple[float, ...], n_metrics: int, groups: int = SCALE_GROUPS
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per metric, scale group, step and level, the shift that makes each quantile cover its level
    on held-out data (split-conformal quantile regression): the level's quantile of ``target -
    predicted``. Small and large series err differently (in units of their scale), so each scale
    group is calibrated on its own (Mondrian conformal): every group, and so the whole, covers
    its levels, and the large series that dominate the loss in the metric's units get the shift
    that suits them.

    Returns ``(offsets (metrics, groups, horizon, quantiles), edges (metrics, groups - 1))``: a
    window of scale ``s`` belongs to group ``searchsorted(edges[metric], s)``.
    """
    horizon = predicted.shape[1]
    offsets = np.zeros((n_metrics, groups, horizon, len(quantiles)))
    edges = np.full((n_metrics, groups - 1), np.inf)
    for m in range(n_metrics):
        rows = metric == m
        if rows.sum() < 50 * groups:
            continue  # too few held-out windows to calibrate this metric: leave it as trained
        edges[m] = np.quantile(scale[rows], np.arange(1, groups) / groups)
        group = np.searchsorted(edges[m], scale[rows])
        residual = target[rows][..., None] - predicted[rows]
        for g in range(groups):
            members = residual[group == g]
            if len(members) < 50:
                continue
            for q, level in enumerate(quantiles):
                offsets[m, g, :, q] = np.quantile(members[..., q], level, axis=0)
    return offsets, edges


def weighted_quantile(values: np.ndarray, weight: np.ndarray, level: float) -> float:
    """The smallest value whose share of the total weight at or below it reaches ``level``."""
    order = np.argsort(values)
    cumulative = np.cumsum(weight[order])
    return float(values[order][np.searchsorted(cumulative, level * cumulative[-1])])
