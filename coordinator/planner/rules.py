"""The per-VM rules: pre-sculpt, graceful downgrade and reclamation of one metric of one VM.

Everything works from a quantile forecast: :func:`quantile_at` reads any level from it (between
two quantiles above the median, each halving of the exceedance probability adds the same amount of
demand, an exponential tail piece by piece; below the median, linearly from zero demand; beyond the
top quantile, the exponential tail of its two highest ones),
:func:`exceedance` is the probability that demand exceeds an allocation, and
:func:`expected_shortfall` the demand expected above it.
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass

import numpy as np

from presculpt.coordinator.forecast.base import level_between, level_weight, level_weights
from presculpt.coordinator.planner.model import Forecast, TierPolicy, VmMemory

_PROBABILITY_GRID = tuple(((np.arange(100) + 0.5) / 100).tolist())  # midpoints of 100 equal-probability slices


def quantile_at(forecast: Forecast, level: float) -> np.ndarray:
    """The forecast's quantile at ``level`` for every step: (horizon,)."""
    levels = forecast.quantiles
    values = forecast.values
    top = levels[-1]
    if level <= top:
        if level <= levels[0]:
            return values[:, 0] * (level / levels[0]) if levels[0] > 0 else values[:, 0]
        j = int(np.searchsorted(levels, level))
        if levels[j] == level:
            return values[:, j]
        w = level_weight(levels[j - 1], levels[j], level)
        return values[:, j - 1] * (1 - w) + values[:, j] * w
    # Exponential tail: each halving of the exceedance probability adds the same amount.
    prev = levels[-2]
    per_decade = (values[:, -1] - values[:, -2]) / math.log10((1 - prev) / (1 - top))
    return values[:, -1] + per_decade * math.log10((1 - top) / (1 - level))


def exceedance(forecast: Forecast, allocation: float) -> np.ndarray:
    """P(demand > allocation) at every step: (horizon,). The forecast read as :func:`quantile_at`
    reads it: linear from zero demand below the lowest quantile, piecewise exponential or linear
    between quantiles, the exponential tail above the top one. (Plain Python over the dozen steps:
    this runs millions of times in a replay, where numpy's per-call overhead dominates.)"""
    levels = forecast.quantiles
    top, second = levels[-1], levels[-2]
    tail = math.log10((1 - second) / (1 - top))
    out = []
    for row in forecast.values.tolist():
        if allocation >= row[-1]:
            spread = row[-1] - row[-2]
            decades = (allocation - row[-1]) / spread if spread > 1e-12 else math.inf
            out.append((1 - top) * 10.0 ** (-decades * tail))
        elif allocation < row[0]:
            out.append(1 - levels[0] * (allocation / row[0] if row[0] > 0 else 1.0))
        else:
            k = bisect.bisect_right(row, allocation)  # row[k - 1] <= allocation < row[k]
            lo, hi = row[k - 1], row[k]
            out.append(1 - level_between(levels[k - 1], levels[k], (allocation - lo) / (hi - lo)))
    return np.array(out)


@functools.lru_cache(maxsize=16)
def _interpolation(quantiles: tuple[float, ...], levels: tuple[float, ...]) -> tuple[np.ndarray, int, np.ndarray]:
    """For sorted ``levels``: the weights W (:func:`level_weights`) that read the forecast at the
    first ``k`` of them, those up to the top quantile; and, for the levels above it, their distance
    into the exponential tail in units of the top two quantiles' spread."""
    levels_arr = np.asarray(levels)
    k = int(np.count_nonzero(levels_arr <= quantiles[-1]))
    q = quantiles
    tail = np.log10((1 - q[-1]) / (1 - levels_arr[k:])) / math.log10((1 - q[-2]) / (1 - q[-1]))
    return level_weights(tuple(quantiles), tuple(levels[:k])), k, tail


def quantile_grid(forecast: Forecast, levels: tuple[float, ...] = _PROBABILITY_GRID) -> np.ndarray:
    """The forecast's quantiles at many ``levels`` (sorted) for every step: (horizon, len(levels)).
    Read as :func:`quantile_at` reads it. ``levels`` is a tuple: the interpolation weights
    are cached by it (this runs millions of times in a replay)."""
    values = forecast.values
    weights, k, tail = _interpolation(forecast.quantiles, levels)
    out = np.empty((len(values), len(levels)))
    out[:, :k] = values @ weights
    if len(tail):
        out[:, k:] = values[:, -1:] + (values[:, -1] - values[:, -2])[:, None] * tail
    return out


def expected_shortfall(forecast: Forecast, allocation: float) -> float:
    """Expected demand above ``allocation`` summed over the horizon, in the metric's units x steps."""
    return _shortfall(quantile_grid(forecast), allocation)


def shortfall_avoided(forecast: Forecast, before: float, after: float) -> float:
    """expected_shortfall(before) - expected_shortfall(after), from one quantile grid."""
    grid = quantile_grid(forecast)
    return _shortfall(grid, before) - _shortfall(grid, after)


def violations_avoided(forecast: Forecast, before: float, after: float, ceiling: float) -> float:
    """Expected violated steps over the horizon that moving the allocation from ``before`` to
    ``after`` avoids (negative: adds), counting only demand up to ``ceiling`` (above it a step is
    violated whatever the allocation), each step at the next step's probability.

    Cost-optimal sizing picks the allocation from the next step's forecast and is asked again at
    every step, so a change is priced from the same view: what later steps bring, the next
    decisions see sooner and sharper than the forecast's wider later steps do today. (Bitbrains
    replay, silver: 30.4% CPU slack at 2.586% violation and 19.3 resizes per VM-day, a violated
    step at 31 vCPU-steps and a resize at 0.006; with each step's own probability 32.2% at 2.57%
    and 16.3 at 30 and 0.002, and at those prices on cached forecasts 30.1% at 2.59% but 26.2
    resizes with the next step's.)"""
    lo, hi = min(before, ceiling), min(after, ceiling)
    first = Forecast(forecast.quantiles, forecast.values[:1])
    return float(exceedance(first, lo)[0] - exceedance(first, hi)[0]) * forecast.horizon


def _shortfall(grid: np.ndarray, allocation: float) -> float:
    """Mean over the equal-probability levels of the demand above ``allocation``, summed over steps."""
    return float(np.maximum(grid - allocation, 0.0).sum() / grid.shape[1])


# The levels cost-optimal sizing chooses among: fine to p99, then by tenths of a decade to p99.99.
_SIZING_LEVELS = np.concatenate([np.linspace(0.5, 0.99, 50), 1 - np.geomspace(0.01, 1e-4, 21)[1:]])
_SIZING_KEY = tuple(_SIZING_LEVELS.tolist())


def provisioned(forecast: Forecast, tier: TierPolicy, ceiling: float) -> np.ndarray:
    """The allocation ``tier`` asks for at every step (before the floor): its quantile, or with a
    ``violation_cost`` the cost-optimal level of each step (not below ``min_level``); plus the
    tier's margin."""
    if tier.violation_cost is None:
        return quantile_at(forecast, tier.quantile) * (1 + tier.margin)
    grid = quantile_grid(forecast, _SIZING_KEY)  # (horizon, levels)
    held = np.minimum(grid, ceiling)
    # Demand above the ceiling is a violation whatever the allocation: only P(held < demand <=
    # ceiling) is at stake, = P(demand <= ceiling) - level (0 once the level reaches the ceiling).
    # Usually the whole grid is below the ceiling, and P(demand <= ceiling) is 1 to within the
    # grid's top level.
    within = 1.0 if grid[:, -1].max() < ceiling else 1.0 - exceedance(forecast, ceiling)
    cost = held + tier.violation_cost * np.maximum(np.reshape(within, (-1, 1)) - _SIZING_LEVELS, 0.0)
    if tier.min_level is not None:
        cost[:, _SIZING_LEVELS < tier.min_level - 1e-9] = np.inf
    return held[np.arange(len(held)), cost.argmin(axis=1)] * (1 + tier.margin)


def sizing_name(tier: TierPolicy) -> str:
    if tier.violation_cost is None:
        return f"p{tier.quantile * 100:g}"
    least = f"at least p{tier.min_level * 100:g}, " if tier.min_level is not None else ""
    return f"cost-optimal level ({least}violation cost {tier.violation_cost:g} vCPU-steps)"


@dataclass(frozen=True)
class MetricDecision:
    """What one metric of one VM should become, and why. ``kind`` is "" when nothing changes."""

    target: float
    kind: str
    reason: str
    confidence: float  # P(demand > current) over the lead window
    need: float  # the allocation the tier policy asks for over the downgrade window
    below_steps: int
    idle_steps: int
    safety: bool = False  # a raise back to a safety floor (the cost model never vetoes it)


def decide(metric: str, unit: str, forecast: Forecast, current: float, floor: float, ceiling: float,
           tier: TierPolicy, memory: VmMemory, below_steps: int, step: int, idle_fraction: float = 0.0,
           reclaim_idle_steps: int = 0, hard_floor: float = 0.0, hard_floor_reason: str = "",
           floor_reason: str = "the floor") -> MetricDecision:
    """Pre-sculpt, downgrade or reclaim one metric (or keep it), by the rules of ``tier``.

    - pre-sculpt: the provisioned quantile (plus margin) of the lead window exceeds the allocation:
      grow now to it plus headroom;
    - downgrade: that quantile over the whole horizon stayed more than ``deadband`` below the
      allocation for ``hold_steps``, and no resize happened within ``cooldown_steps``: step down
      by at most ``max_step_down``;
    - reclaim: the upper forecast stayed below ``idle_fraction`` of the ceiling for
      ``reclaim_idle_steps``: go to the need at once.
    Neither ``floor`` nor ``hard_floor`` (memory: what the guest uses plus a margin) is crossed
    downwards; an allocation below them is raised back at once (``floor_reason`` and
    ``hard_floor_reason`` say what they are).
    """
    floor = max(floor, hard_floor)
    upper = provisioned(forecast, tier, ceiling)
    lead = upper[: tier.lead_steps + 1]
    need_now = float(lead.max())
    window = upper[: tier.shrink_window_steps] if tier.shrink_window_steps else upper
    need = max(float(window.max()), need_now, floor)
    if need_now > current * 1.01 and current < ceiling:
        target = min(max(need_now * (1 + tier.grow_headroom), floor), ceiling)
        confidence = float(exceedance(forecast, current)[: tier.lead_steps + 1].max())
        margin = f" (with {tier.margin:.0%} margin)" if tier.margin else ""
        reason = (f"{metric} {sizing_name(tier)} forecast {need_now:.3g} {unit}{margin} within "
                  f"{(tier.lead_steps + 1) * 5} min exceeds the {current:.3g} allocated "
                  f"(P(demand > allocation) = {confidence:.2f})")
        return MetricDecision(target, "presculpt", reason, confidence, need, 0, 0)
    if current < floor * 0.999:
        # Past the floor by the grow headroom, as any grow: a floor that creeps up with what the
        # guest uses would otherwise be chased by a raise every step.
        why = hard_floor_reason if hard_floor > 0 and floor == hard_floor else floor_reason
        target = min(floor * (1 + tier.grow_headroom), ceiling)
        return MetricDecision(target, "presculpt", f"{metric} below {why} ({floor:.3g} {unit}): raise to {target:.3g} {unit}",
                              1.0, need, 0, 0, safety=True)
    idle = memory.idle_steps + 1 if reclaim_idle_steps and need < idle_fraction * ceiling else 0
    below = below_steps + 1 if need < current * (1 - tier.deadband) else 0
    cooled = step - memory.last_resize_step >= tier.cooldown_steps
    if reclaim_idle_steps and idle >= reclaim_idle_steps and cooled and need < current * 0.99:
        reason = (f"{metric} idle: {sizing_name(tier)} forecast below {idle_fraction:.0%} of the maximum for "
                  f"{idle} steps; reclaim down to {need:.3g} {unit}")
        return MetricDecision(need, "reclaim", reason, 0.0, need, 0, 0)
    if below >= tier.hold_steps and cooled:
        target = max(need * (1 + tier.grow_headroom), current * (1 - tier.max_step_down), floor)
        if target < current * 0.99:
            reason = (f"{metric} {sizing_name(tier)} forecast {need:.3g} {unit} over the next {len(window) * 5} min stayed below the "
                      f"{current:.3g} allocated for {below} steps; step down to {target:.3g}")
            return MetricDecision(target, "downgrade", reason, 0.0, need, 0, idle)
    return MetricDecision(current, "", "", 0.0, need, below, idle)
