"""The autoscalers operators use today, as the replay defines them. Each policy maps an (N, T)
demand matrix to an (N, T) allocation matrix in which column ``t`` depends on columns ``< t`` only;
every VM starts at its maximum. Allocations are clamped to [floor, maximum] by the caller.

- ``static``: the maximum, always.
- ``reactive``: 1.5x when the last step's utilisation was above 0.8; 0.8x after 6 steps below 0.3.
- ``vpa``: the Kubernetes VPA recommender. CPU: the 90th percentile of a histogram of samples whose
  weights halve every 24 h, times 1.15. Memory: the same over each day's peak (the current day's
  peak so far and the 7 days before it).
- ``autopilot``: Google Autopilot's moving-window recommender. CPU: the 95th percentile of a
  load-weighted histogram (each sample weighted by its value) whose weights halve every 12 h, plus
  10%. Memory: the peak of the last 24 h plus 10%.

Not a policy but a bound, never part of ``all``: ``hindsight`` (``hindsight-30m``, ``hindsight-12h``)
sees the future. Each step gets the most demand of that step and the ones after it in the window, so
it never violates (beyond a VM's maximum) and it resizes only when the window's peak moves. It
measures how far a causal policy is from one that knows the next minutes or hours: on the Bitbrains
trace 30 minutes of hindsight leave 19.6% CPU slack and 12 hours 69% memory slack.

Histograms use VPA's exponential buckets (the first 0.01 cores or 10 MB wide, each 5% wider than the
last); a percentile is the upper edge of the bucket where the cumulative weight reaches it.
"""

from __future__ import annotations

import numpy as np

from presculpt.coordinator.replay.trace import DAY_STEPS, peak_ahead, trailing_peak

BUCKET_RATIO = 1.05
CPU_FIRST_BUCKET = 0.01  # cores
MEMORY_FIRST_BUCKET = 10e6 / 2**20  # 10 MB in MiB


class DecayingHistograms:
    """One exponential-bucket histogram per row, with weights that halve every ``half_life`` steps."""

    def __init__(self, rows: int, first_bucket: float, max_value: float, half_life: float):
        count = int(np.ceil(np.log(max_value / first_bucket * (BUCKET_RATIO - 1) + 1) / np.log(BUCKET_RATIO))) + 1
        self.edges = first_bucket * (BUCKET_RATIO ** np.arange(1, count + 1) - 1) / (BUCKET_RATIO - 1)
        self.weights = np.zeros((rows, count))
        self.decay = 0.5 ** (1.0 / half_life)
        self._rows = np.arange(rows)

    def add(self, values: np.ndarray, weights: np.ndarray | float = 1.0) -> None:
        """Decay every weight by one step, then add one sample per row (NaN values are skipped)."""
        self.weights *= self.decay
        known = ~np.isnan(values)
        buckets = np.searchsorted(self.edges, np.where(known, values, 0.0), side="right")
        buckets = np.minimum(buckets, len(self.edges) - 1)
        w = np.where(known, np.broadcast_to(weights, values.shape), 0.0)
        np.add.at(self.weights, (self._rows, buckets), w)

    def percentile(self, p: float) -> np.ndarray:
        """Per row; NaN where a row is empty."""
        cumulative = np.cumsum(self.weights, axis=1)
        total = cumulative[:, -1]
        bucket = np.argmax(cumulative >= p * total[:, None] - 1e-12 * total[:, None], axis=1)
        return np.where(total > 0, self.edges[bucket], np.nan)


def hindsight(demand: np.ndarray, steps: int) -> np.ndarray:
    """``[i, t]``: the peak of ``demand[i, t:t + steps]`` (it reads the future: a bound, not a policy);
    NaN where ``demand[i, t]`` is."""
    return np.where(np.isnan(demand), np.nan, peak_ahead(demand, steps))


def static(demand: np.ndarray, maximum: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(demand), np.nan, maximum[:, None])


def reactive(demand: np.ndarray, maximum: np.ndarray, floor: float, up: float = 1.5, down: float = 0.8,
             high: float = 0.8, low: float = 0.3, low_steps: int = 6) -> np.ndarray:
    n, steps = demand.shape
    out = np.full((n, steps), np.nan)
    alloc = maximum.astype(float).copy()
    below = np.zeros(n, dtype=np.int64)
    for t in range(steps):
        out[:, t] = alloc
        d = demand[:, t]
        known = ~np.isnan(d)
        util = np.where(known, d, 0.0) / alloc
        grow = known & (util > high)
        quiet = known & (util < low)
        below = np.where(quiet, below + 1, 0)
        shrink = below >= low_steps
        alloc = np.where(grow, alloc * up, np.where(shrink, alloc * down, alloc))
        alloc = np.clip(alloc, floor, maximum)
        below[shrink] = 0
    return np.where(np.isnan(demand), np.nan, out)


def _histogram_policy(demand: np.ndarray, maximum: np.ndarray, first_bucket: float, half_life_h: float,
                      percentile: float, factor: float, load_weighted: bool) -> np.ndarray:
    n, steps = demand.shape
    top = float(np.nanmax(np.concatenate([maximum, np.nanmax(demand, axis=1)]))) * 2 + first_bucket
    hist = DecayingHistograms(n, first_bucket, top, half_life_h * 3600 / 300)
    out = np.full((n, steps), np.nan)
    alloc = maximum.astype(float).copy()
    for t in range(steps):
        out[:, t] = alloc
        d = demand[:, t]
        hist.add(d, np.where(np.isnan(d), 0.0, d) if load_weighted else 1.0)
        recommended = hist.percentile(percentile) * factor
        alloc = np.where(np.isnan(recommended), alloc, recommended)
    return np.where(np.isnan(demand), np.nan, out)


def vpa_cpu(demand: np.ndarray, maximum: np.ndarray) -> np.ndarray:
    return _histogram_policy(demand, maximum, CPU_FIRST_BUCKET, 24.0, 0.90, 1.15, load_weighted=False)


def autopilot_cpu(demand: np.ndarray, maximum: np.ndarray) -> np.ndarray:
    return _histogram_policy(demand, maximum, CPU_FIRST_BUCKET, 12.0, 0.95, 1.10, load_weighted=True)


def vpa_memory(demand: np.ndarray, maximum: np.ndarray, first: np.ndarray, days: int = 8,
               percentile: float = 0.90, factor: float = 1.15) -> np.ndarray:
    """The 90th percentile of the daily peaks x 1.15: the current day's peak so far and the 7
    complete days before it, day k weighted 2^-(its age in days). Days start at each VM's first slot."""
    n, steps = demand.shape
    out = np.full((n, steps), np.nan)
    peaks = np.full((n, days), np.nan)  # column days-1: the current day; to its left, older days
    weights = 0.5 ** np.arange(days - 1, -1, -1, dtype=float)
    alloc = maximum.astype(float).copy()
    rows = np.arange(n)
    for t in range(steps):
        out[:, t] = alloc
        d = demand[:, t]
        known = ~np.isnan(d)
        new_day = known & (t > first) & ((t - first) % DAY_STEPS == 0)
        if new_day.any():
            peaks[new_day] = np.roll(peaks[new_day], -1, axis=1)
            peaks[new_day, -1] = np.nan
        current = peaks[:, -1]
        peaks[:, -1] = np.where(known, np.fmax(current, d), current)
        if not known.any():
            continue
        values = np.where(np.isnan(peaks), np.inf, peaks)
        order = np.argsort(values, axis=1)
        sorted_values = values[rows[:, None], order]
        w = np.where(np.isnan(peaks), 0.0, weights)[rows[:, None], order]
        cumulative = np.cumsum(w, axis=1)
        pick = np.argmax(cumulative >= percentile * cumulative[:, -1:] - 1e-12, axis=1)
        recommended = sorted_values[rows, pick] * factor
        alloc = np.where(known & np.isfinite(recommended), recommended, alloc)
    return np.where(np.isnan(demand), np.nan, out)


def autopilot_memory(demand: np.ndarray, maximum: np.ndarray) -> np.ndarray:
    """The peak of the previous 24 h plus 10%."""
    return peak_rule(demand, maximum, DAY_STEPS, 1.10)


def peak_rule(demand: np.ndarray, maximum: np.ndarray, window: int, factor: float) -> np.ndarray:
    """``factor`` x the peak of the previous ``window`` steps; the maximum before any demand is known."""
    peak = trailing_peak(demand, window)
    out = np.where(np.isnan(peak), maximum[:, None], peak * factor)
    return np.where(np.isnan(demand), np.nan, out)
