"""The best trailing-peak rule for each VM, chosen with hindsight: a bound on rules of the kind
today's recommenders use for memory (vpa: daily peaks; autopilot: the 24-hour peak plus 10%),
measured for CPU too.

A rule allocates ``factor`` times the peak demand of the last ``window`` steps (never below the
metric's floor nor above the VM's maximum; before any demand is known, the maximum): autopilot's
memory rule is the grid's 24 hours and 1.1. For every VM
and every rule of a grid, :func:`rule_costs` counts over the scored steps the allocation, the
violated steps, the slack and the resizes. :func:`frontier` then gives each VM the rule that
minimises ``allocation + price x violated steps`` for a sweep of prices: at each point, no other
choice of one rule per VM has less allocation with as few violations (the price makes each VM's
choice optimal for the fleet at that rate). It says where such rules stop, with hindsight; it is
not a policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from presculpt.coordinator.replay import baselines
from presculpt.coordinator.replay.score import per_vm
from presculpt.coordinator.replay.trace import DAY_STEPS

WINDOW_HOURS = (1, 3, 6, 12, 24, 48, 72, 168)
FACTORS = (1.0, 1.05, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0)


@dataclass(frozen=True)
class RuleCosts:
    """Per VM (rows) and rule (columns, ``rules[j]`` = (window hours, factor); the last is the VM's
    maximum), over the scored steps: allocation, violated steps, slack (allocation above demand)
    and resizes. ``steps`` scored steps in all."""

    rules: tuple[tuple[float, float], ...]
    allocation: np.ndarray
    violations: np.ndarray
    slack: np.ndarray
    resizes: np.ndarray
    steps: int


@dataclass(frozen=True)
class FrontierPoint:
    price: float  # metric units x steps per violated step
    violation: float
    slack: float
    resizes_per_vm_day: float


def rule_allocation(demand: np.ndarray, maximum: np.ndarray, floor: float, window_steps: int,
                    factor: float) -> np.ndarray:
    """``factor`` x the peak of the last ``window_steps`` steps (:func:`baselines.peak_rule`, autopilot's
    memory rule at 24 h and 1.1), clamped to [floor, maximum]."""
    return np.clip(baselines.peak_rule(demand, maximum, window_steps, factor), floor, maximum[:, None])


def rule_costs(demand: np.ndarray, maximum: np.ndarray, floor: float, scored: np.ndarray,
               window_hours: Sequence[float] = WINDOW_HOURS, factors: Sequence[float] = FACTORS) -> RuleCosts:
    """Every rule of the grid (and the maximum) on every VM: see :class:`RuleCosts`."""
    rules = [(float(h), float(f)) for h in window_hours for f in factors]
    counts = [per_vm(demand, rule_allocation(demand, maximum, floor, max(1, round(h * DAY_STEPS / 24)), f), scored)
              for h, f in rules]
    counts.append(per_vm(demand, np.broadcast_to(maximum[:, None], demand.shape), scored))
    rules.append((float("inf"), float("inf")))
    column = {key: np.stack([c[key] for c in counts], axis=1) for key in ("allocation", "violations", "slack", "resizes")}
    return RuleCosts(tuple(rules), column["allocation"], column["violations"], column["slack"], column["resizes"],
                     int(counts[0]["steps"].sum()))


def choose(costs: RuleCosts, price: float) -> np.ndarray:
    """Each VM's rule (column index) minimising allocation + ``price`` x violated steps."""
    return np.argmin(costs.allocation + price * costs.violations, axis=1)


def point(costs: RuleCosts, price: float) -> FrontierPoint:
    rows = np.arange(len(costs.allocation))
    j = choose(costs, price)
    total = costs.allocation[rows, j].sum()
    return FrontierPoint(price, float(costs.violations[rows, j].sum() / costs.steps),
                         float(costs.slack[rows, j].sum() / max(total, 1e-12)),
                         float(costs.resizes[rows, j].sum() / (costs.steps / DAY_STEPS)))


def frontier(costs: RuleCosts, points: int = 25) -> list[FrontierPoint]:
    """The fleet's least-allocation points over a sweep of prices, from the cheapest violation
    (every VM on its leanest rule) to the dearest (every VM on its safest), by violation rate."""
    scale = max(float(costs.allocation.max()), 1.0)  # a price this high makes any violation dearer than any allocation
    prices = np.geomspace(scale * 1e-6, scale * 10, points)
    out = {p.violation: p for p in (point(costs, float(price)) for price in prices)}
    return [out[v] for v in sorted(out, reverse=True)]


def best_within(costs: RuleCosts, budget: float, iterations: int = 60) -> FrontierPoint | None:
    """The least-allocation point whose violation rate is at most ``budget`` (bisection on the
    price in log space); None if even every VM at its safest rule is over it."""
    scale = max(float(costs.allocation.max()), 1.0)
    lo, hi = np.log(scale * 1e-9), np.log(scale * 1e3)
    best = point(costs, float(np.exp(hi)))
    if best.violation > budget:
        return None
    for _ in range(iterations):
        mid = (lo + hi) / 2
        p = point(costs, float(np.exp(mid)))
        if p.violation <= budget:
            best, hi = p, mid
        else:
            lo = mid
    return best


__all__ = ["RuleCosts", "FrontierPoint", "rule_costs", "rule_allocation", "choose", "point", "frontier", "best_within"]
