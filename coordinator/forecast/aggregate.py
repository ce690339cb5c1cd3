"""Aggregate series: the summed demand of every VM of one customer, or of one segment. Pure numpy.

Capacity planning asks about customers and segments as much as about VMs, and a sum is smoother
(and better forecast) than its parts. A VM belongs to the customer and the segment named by its
metadata keys ``customer`` and ``segment``; VMs without them belong to no aggregate.

Summing series with holes: a member's missing step is bridged with its last value for up to
``gap_steps`` steps (a late roll-up, a short agent outage); past that the member counts as absent
(a VM shut down no longer adds demand). A step where no member has a value stays NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from presculpt.coordinator.model import VmRecord

AGGREGATE_KINDS: tuple[str, ...] = ("customer", "segment")  # the VM metadata keys that group VMs
GAP_STEPS = 12  # bridge a member's missing steps for up to an hour of 5-minute steps


@dataclass(frozen=True, order=True)
class AggregateKey:
    kind: str  # one of AGGREGATE_KINDS
    name: str

    def series_key(self, metric: str) -> str:
        """The forecaster's key of one metric: ``customer:acme/cpu_cores``."""
        return f"{self.kind}:{self.name}/{metric}"


@dataclass(frozen=True)
class AggregateSeries:
    key: AggregateKey
    metric: str
    values: np.ndarray  # the members' sum per step, NaN where no member has a value
    capacity: float | None  # the members' summed capacity (None if one is unknown)
    members: int  # VMs that contributed a value


def groups(vms: Iterable[VmRecord]) -> dict[AggregateKey, list[VmRecord]]:
    """The members of every customer and segment named in the VMs' metadata."""
    out: dict[AggregateKey, list[VmRecord]] = {}
    for vm in vms:
        for kind in AGGREGATE_KINDS:
            name = vm.metadata.get(kind, "").strip()
            if name:
                out.setdefault(AggregateKey(kind, name), []).append(vm)
    return out


def fill_short_gaps(values: np.ndarray, limit: int) -> np.ndarray:
    """Forward-fill NaN runs, each step at most ``limit`` steps after the last known value."""
    x = np.asarray(values, dtype=np.float64)
    known = ~np.isnan(x)
    if known.all() or not known.any():
        return x.copy()
    positions = np.arange(len(x))
    last = np.maximum.accumulate(np.where(known, positions, -1))
    reach = (last >= 0) & (positions - last <= limit)
    return np.where(reach, x[np.maximum(last, 0)], np.nan)


def sum_members(series: Sequence[np.ndarray], gap_steps: int = GAP_STEPS) -> np.ndarray:
    """The sum of equally long member series, per the rule in the module docstring."""
    filled = np.stack([fill_short_gaps(s, gap_steps) for s in series])
    known = ~np.isnan(filled)
    total = np.where(known, filled, 0.0).sum(axis=0)
    return np.where(known.any(axis=0), total, np.nan)


def aggregate_series(
    vms: Sequence[VmRecord],
    grid: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    capacity: Callable[[VmRecord, str], float | None],
    gap_steps: int = GAP_STEPS,
) -> list[AggregateSeries]:
    """Every aggregate of every metric in ``grid`` (``{(host, uuid): {metric: values}}``, all on one
    time grid), with at least one member that has a value."""
    metrics = sorted({m for per_vm in grid.values() for m in per_vm})
    out = []
    for key, members in sorted(groups(vms).items()):
        for metric in metrics:
            parts: list[np.ndarray] = []
            capacities: list[float | None] = []
            for vm in members:
                values = grid.get((vm.host, vm.uuid), {}).get(metric)
                if values is None or np.isnan(values).all():
                    continue
                parts.append(values)
                capacities.append(capacity(vm, metric))
            if not parts:
                continue
            sizes = [c for c in capacities if c is not None]
            total_capacity = float(sum(sizes)) if len(sizes) == len(capacities) else None
            out.append(AggregateSeries(key, metric, sum_members(parts, gap_steps), total_capacity, len(parts)))
    return out
