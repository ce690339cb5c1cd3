"""Forecast anomalies: demand that stays outside what the forecaster thought possible. Pure code.

For each VM metric, the band of a step is the lowest and the highest quantile of its freshest
forecast (the one made closest before it: one step ahead when the forecast job runs every step).
When the measured mean of each of the last ``steps`` steps is above the band's top (or each below
its bottom), the VM is in an anomaly episode: something the model did not see coming (a new
workload, a runaway process, a crashed service). The detector raises one anomaly when an episode
starts, and re-arms once the demand is back inside the band; a single step outside is noise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from presculpt.coordinator.model import ForecastRecord

ABOVE, BELOW, INSIDE = "above", "below", "inside"


@dataclass(frozen=True)
class BandStep:
    """One past step: what happened, and the band its freshest forecast gave."""

    ts: float  # start of the step
    actual: float
    low: float  # the forecast's lowest quantile
    high: float  # its highest quantile


@dataclass(frozen=True)
class BandCheck:
    """The recent steps of one VM metric, oldest first, for the detector."""

    host: str
    uuid: str
    vm: str  # the VM's name
    metric: str
    model: str  # the model of the newest forecast in the band
    low_quantile: float
    high_quantile: float
    steps: tuple[BandStep, ...]


@dataclass(frozen=True)
class ForecastAnomaly:
    """An anomaly episode's start: the event watchers receive (as an Event payload)."""

    host: str
    uuid: str
    vm: str
    metric: str
    direction: str  # "above" or "below"
    quantile: float  # the level crossed: the highest quantile (above) or the lowest (below)
    model: str
    steps: tuple[BandStep, ...]

    def describe(self) -> str:
        """One line for the log: VM, metric, direction and values."""
        actual = ", ".join(f"{s.actual:.4g}" for s in self.steps)
        bound = ", ".join(f"{(s.high if self.direction == ABOVE else s.low):.4g}" for s in self.steps)
        limit = "at most" if self.direction == ABOVE else "at least"
        return (f"forecast anomaly: {self.metric} of VM {self.vm} on {self.host} {self.direction} its "
                f"p{self.quantile * 100:g} forecast for the last {len(self.steps)} steps: actual {actual}; "
                f"forecast {limit} {bound} ({self.model})")


def classify(steps: Sequence[BandStep], needed: int) -> str | None:
    """ABOVE, BELOW or INSIDE for the last ``needed`` steps; None when fewer are known."""
    if len(steps) < needed:
        return None
    recent = steps[-needed:]
    if all(s.actual > s.high for s in recent):
        return ABOVE
    if all(s.actual < s.low for s in recent):
        return BELOW
    return INSIDE


class AnomalyDetector:
    """Raises each episode once. ``update`` is called with every VM metric on every forecast run;
    a metric that cannot be judged (steps missing) keeps its state."""

    def __init__(self, steps: int):
        if steps < 1:
            raise ValueError("an anomaly needs at least one step")
        self.steps = steps
        self._episodes: dict[tuple[str, str, str], str] = {}  # (host, uuid, metric) -> direction

    @property
    def active(self) -> dict[tuple[str, str, str], str]:
        """Ongoing episodes by (host, uuid, metric)."""
        return dict(self._episodes)

    def update(self, checks: Iterable[BandCheck]) -> list[ForecastAnomaly]:
        """Judge every check; returns the episodes that started now. VM metrics absent from
        ``checks`` (the VM is gone) are forgotten."""
        raised = []
        seen = set()
        for check in checks:
            key = (check.host, check.uuid, check.metric)
            seen.add(key)
            state = classify(check.steps, self.steps)
            if state is None:
                continue
            if state == INSIDE:
                self._episodes.pop(key, None)
                continue
            if self._episodes.get(key) == state:
                continue  # the same episode, already raised
            self._episodes[key] = state
            level = check.high_quantile if state == ABOVE else check.low_quantile
            raised.append(ForecastAnomaly(check.host, check.uuid, check.vm, check.metric, state, level,
                                          check.model, tuple(check.steps[-self.steps:])))
        for key in set(self._episodes) - seen:
            del self._episodes[key]
        return raised


def recent_band(records: Iterable[ForecastRecord], actuals: Mapping[float, float], end: float,
                step_s: float, steps: int) -> tuple[list[BandStep], str]:
    """The band of the ``steps`` consecutive steps ending with the newest step before ``end`` that
    has an actual (the newest bucket may not be rolled up yet, so the search goes back up to
    ``steps`` steps). Returns fewer steps when one has no actual or no forecast covering it, and
    the model of the freshest forecast used."""
    by_origin = {r.origin: r for r in records}
    if not by_origin:
        return [], ""
    horizon = max(len(r.values) for r in by_origin.values())
    last = None
    for back in range(1, steps + 1):
        t = end - back * step_s
        if t in actuals:
            last = t
            break
    if last is None:
        return [], ""
    out: list[BandStep] = []
    model = ""
    for i in range(steps - 1, -1, -1):
        t = last - i * step_s
        actual = actuals.get(t)
        record, lead = _freshest(by_origin, t, step_s, horizon)
        if actual is None or record is None:
            out = []  # the run must be consecutive: start again after the hole
            continue
        values = record.values[lead]
        out.append(BandStep(t, actual, values[0], values[-1]))
        model = record.model
    return out, model


def _freshest(by_origin: Mapping[float, ForecastRecord], t: float, step_s: float,
              horizon: int) -> tuple[ForecastRecord | None, int]:
    for lead in range(horizon):
        record = by_origin.get(t - lead * step_s)
        if record is not None and lead < len(record.values):
            return record, lead
    return None, 0
