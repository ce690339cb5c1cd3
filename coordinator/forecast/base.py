"""The forecaster's interface: series histories in, quantile forecasts out. No torch here.

A series is one metric of one VM (or of an aggregate) on a regular grid of ``step_s`` seconds.
Forecasts are quantiles of the metric's mean over each of the next ``horizon`` steps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

STEP_S = 300.0  # one step: the canonical traces' and the roll-ups' 5 minutes
HORIZON = 12  # default horizon: the next hour
QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9, 0.99)
METRICS: tuple[str, ...] = ("cpu_cores", "memory_mib")
DAY_STEPS = int(86400 / STEP_S)
WEEK_STEPS = 7 * DAY_STEPS


# How a quantile forecast reads between its levels (the planner's quantiles and exceedance
# probabilities, and forecasts given extra levels): between two quantiles from GEOMETRIC_FROM up,
# demand grows with the log of the exceedance probability (p90 -> p99 adds as much as p99 -> p99.9),
# the shape of an exponential tail; below, and from zero demand to the lowest quantile, linearly.
# A linear reading spreads the upper tail's probability evenly between p90 and p99: a step just
# above p90 looks ten times as likely as it is near p99, and sizing pays for the phantom mass.
GEOMETRIC_FROM = 0.5


def level_weight(lo: float, hi: float, level: float) -> float:
    """How far (0..1, in demand) the quantile at ``level`` lies from the one at ``lo`` to the one at ``hi``."""
    if lo >= GEOMETRIC_FROM:
        return math.log((1 - lo) / (1 - level)) / math.log((1 - lo) / (1 - hi))
    return (level - lo) / (hi - lo)


def level_between(lo: float, hi: float, weight: float) -> float:
    """The inverse of :func:`level_weight`: the level ``weight`` of the way from ``lo`` to ``hi``."""
    if lo >= GEOMETRIC_FROM:
        return 1 - (1 - lo) * ((1 - hi) / (1 - lo)) ** weight
    return lo + weight * (hi - lo)


@functools.lru_cache(maxsize=32)
def level_weights(quantiles: tuple[float, ...], levels: tuple[float, ...]) -> np.ndarray:
    """W (len(quantiles), len(levels)) with ``values @ W`` = quantile ``values`` read at ``levels`` as
    above: from zero demand at level 0 below the lowest quantile, the top value from the top one up.
    Cached by its tuples (the planner reads forecasts millions of times in a replay)."""
    knots = np.concatenate([[0.0], np.asarray(quantiles, dtype=np.float64)])
    weights = np.zeros((len(knots), len(levels)))
    for col, p in enumerate(levels):
        j = int(np.searchsorted(knots, p, side="right"))
        if j >= len(knots):  # the top quantile or above it
            weights[-1, col] = 1.0
            continue
        w = level_weight(knots[j - 1], knots[j], p)
        weights[j - 1, col], weights[j, col] = 1 - w, w
    out = weights[1:]  # the first row multiplies zero demand
    out.flags.writeable = False
    return out


def at_levels(values: np.ndarray, quantiles: Sequence[float], levels: Sequence[float]) -> np.ndarray:
    """Quantile ``values`` (..., len(quantiles)) read at ``levels`` (..., len(levels)) by
    :func:`level_weights`. A level the forecast has keeps its value, so adding levels changes
    nothing a reader of the forecast sees below its top."""
    return values @ level_weights(tuple(float(q) for q in quantiles), tuple(float(p) for p in levels))


@dataclass(frozen=True)
class SeriesHistory:
    """The recent history of one series, oldest first, ending just before the forecast origin.

    ``values`` has no gaps (fill them before; NaN is allowed only where nothing is known);
    ``origin`` is the start time of the first step to forecast (Unix seconds).
    ``capacity`` is the VM's size in the metric's units (vCPUs, MiB); None when unknown.
    """

    key: str  # e.g. "host/uuid/cpu_cores", or "customer:acme/cpu_cores"
    metric: str
    origin: float
    values: np.ndarray
    capacity: float | None = None
    workload_class: str = ""
    customer: str = ""
    # Known-future covariate: 1.0 for each forecast step inside an operator-declared event.
    events: np.ndarray | None = None
    step_s: float = STEP_S


@dataclass(frozen=True)
class QuantileForecast:
    """Quantiles of one series over the next ``len(values)`` steps: ``values[h, q]``."""

    key: str
    metric: str
    origin: float
    step_s: float
    quantiles: tuple[float, ...]
    values: np.ndarray  # shape (horizon, len(quantiles)), non-decreasing along quantiles
    model: str
    cold_start: bool = False
    extra: dict[str, float] = field(default_factory=dict)


class Forecaster(Protocol):
    """Anything that turns histories into quantile forecasts."""

    name: str
    quantiles: tuple[float, ...]
    horizon: int

    def predict(self, histories: Sequence[SeriesHistory]) -> list[QuantileForecast]: ...


def forward_fill(values: np.ndarray) -> np.ndarray:
    """Replace NaN by the last known value (leading NaN by the first known one)."""
    out = np.asarray(values, dtype=np.float64).copy()
    mask = np.isnan(out)
    if not mask.any():
        return out
    if mask.all():
        return np.zeros_like(out)
    index = np.where(~mask, np.arange(len(out)), 0)
    np.maximum.accumulate(index, out=index)
    out = out[index]
    first = np.argmax(~mask)
    out[:first] = out[first]
    return out
