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


def per_vm(demand: np.ndarray, allocation: np.ndarray, scored: np.ndarray) -> dict[str, np.ndarray]:
    """The counts behind the scores, per VM (rows) over its scored steps: ``steps``, ``violations``,
    ``demand``, ``allocation``, ``unmet`` (demand above the allocation), ``slack`` (allocation above
    the demand) and ``resizes``."""
    mask = scored & ~np.isnan(demand) & ~np.isnan(allocation)
    d = np.where(mask, demand, 0.0)
    a = np.where(mask, allocation, 0.0)
    previous = np.concatenate([allocation[:, :1], allocation[:, :-1]], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        changed = np.abs(allocation - previous) > RESIZE_THRESHOLD * np.abs(previous)
    return {"steps": mask.sum(axis=1), "violations": np.count_nonzero(mask & (demand > allocation), axis=1),
            "demand": d.sum(axis=1), "allocation": a.sum(axis=1), "unmet": np.maximum(d - a, 0).sum(axis=1),
            "slack": np.maximum(a - d, 0).sum(axis=1), "resizes": np.count_nonzero(changed & mask, axis=1)}


def score(demand: np.ndarray, allocation: np.ndarray, scored: np.ndarray) -> dict[str, float]:
    """Scores of one metric; ``demand``, ``allocation`` and ``scored`` are (N, T)."""
    counts = {k: v.sum() for k, v in per_vm(demand, allocation, scored).items()}
    steps = int(counts["steps"])
    if not steps:
        return {"violation": float("nan"), "unmet": float("nan"), "slack": float("nan"),
                "resizes_per_vm_day": float("nan"), "vm_days": 0.0}
    return {
        "violation": float(counts["violations"] / steps),
        "unmet": float(counts["unmet"] / max(counts["demand"], 1e-12)),
        "slack": float(counts["slack"] / max(counts["allocation"], 1e-12)),
        "resizes_per_vm_day": float(counts["resizes"] / (steps / DAY_STEPS)),
        "vm_days": steps / DAY_STEPS,
    }
