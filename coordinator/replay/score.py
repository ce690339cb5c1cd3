"""The replay's scores, exactly as defined for comparing policies across tools and traces.

Over the scored VM-steps (alive, past warm-up, demand known), with demand d and allocation a:
- violation: share of steps with d > a
- unmet: sum(max(0, d - a)) / sum(d)
- slack: sum(max(0, a - d)) / sum(a)
- resizes_per_vm_day: steps whose allocation differs from the previous step's by more than 1%,
  per scored VM-day.
"""

from __future__ import annotations

import numpy as np

from presculpt.coordinator.replay.trace import DAY_STEPS

RESIZE_THRESHOLD = 0.01


def score(demand: np.ndarray, allocation: np.ndarray, scored: np.ndarray) -> dict[str, float]:
    """Scores of one metric; ``demand``, ``allocation`` and ``scored`` are (N, T)."""
    mask = scored & ~np.isnan(demand) & ~np.isnan(allocation)
    d = np.where(mask, demand, 0.0)
    a = np.where(mask, allocation, 0.0)
    steps = int(mask.sum())
    if not steps:
        return {"violation": float("nan"), "unmet": float("nan"), "slack": float("nan"),
                "resizes_per_vm_day": float("nan"), "vm_days": 0.0}
    previous = np.concatenate([allocation[:, :1], allocation[:, :-1]], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        changed = np.abs(allocation - previous) > RESIZE_THRESHOLD * np.abs(previous)
    return {
        "violation": float(np.count_nonzero(mask & (demand > allocation)) / steps),
        "unmet": float(np.maximum(d - a, 0).sum() / max(d.sum(), 1e-12)),
        "slack": float(np.maximum(a - d, 0).sum() / max(a.sum(), 1e-12)),
        "resizes_per_vm_day": float(np.count_nonzero(changed & mask) / (steps / DAY_STEPS)),
        "vm_days": steps / DAY_STEPS,
    }
