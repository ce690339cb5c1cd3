"""Online forecast accuracy: stored forecasts scored against what then happened. Pure code.

The pinball (quantile) loss of a forecast ``f`` at level ``q`` for an outcome ``y`` is
``max(q * (y - f), (q - 1) * (y - f))``; averaged over levels, steps and forecasts it is the
probabilistic counterpart of the mean absolute error (in the metric's units). Coverage of the
``q`` quantile is the share of outcomes at or below it: a calibrated 90th percentile covers 0.9.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from presculpt.coordinator.model import ForecastRecord


@dataclass(frozen=True)
class Accuracy:
    pinball: float
    coverage_p90: float
    coverage_p99: float
    count: int  # forecast steps scored

    @staticmethod
    def empty() -> "Accuracy":
        return Accuracy(0.0, 0.0, 0.0, 0)


@dataclass
class AccuracyTally:
    """Running sums; ``add`` scores one forecast step, ``result`` gives the means."""

    loss: float = 0.0
    covered_p90: int = 0
    covered_p99: int = 0
    scored_p90: int = 0
    scored_p99: int = 0
    count: int = 0

    def add(self, quantiles: tuple[float, ...], values: tuple[float, ...], actual: float) -> None:
        self.loss += sum(pinball(q, actual, f) for q, f in zip(quantiles, values)) / len(quantiles)
        self.count += 1
        for level, attr in ((0.9, "p90"), (0.99, "p99")):
            index = _index(quantiles, level)
            if index is not None:
                setattr(self, f"scored_{attr}", getattr(self, f"scored_{attr}") + 1)
                if actual <= values[index]:
                    setattr(self, f"covered_{attr}", getattr(self, f"covered_{attr}") + 1)

    def merge(self, other: "AccuracyTally") -> None:
        for name in ("loss", "covered_p90", "covered_p99", "scored_p90", "scored_p99", "count"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def result(self) -> Accuracy:
        if not self.count:
            return Accuracy.empty()
        return Accuracy(
            pinball=self.loss / self.count,
            coverage_p90=self.covered_p90 / self.scored_p90 if self.scored_p90 else 0.0,
            coverage_p99=self.covered_p99 / self.scored_p99 if self.scored_p99 else 0.0,
            count=self.count,
        )


def pinball(q: float, actual: float, forecast: float) -> float:
    error = actual - forecast
    return max(q * error, (q - 1.0) * error)


def _index(quantiles: tuple[float, ...], level: float) -> int | None:
    for i, q in enumerate(quantiles):
        if abs(q - level) < 1e-9:
            return i
    return None


def tally(records: Iterable[ForecastRecord], actuals: Mapping[float, float],
          lead_steps: int | None = None) -> AccuracyTally:
    """Score every step of ``records`` whose outcome is in ``actuals`` (keyed by step start).

    ``lead_steps`` scores only the step that many steps after each origin (1 = the first step);
    None scores every step of the horizon.
    """
    result = AccuracyTally()
    for record in records:
        steps = range(len(record.values)) if lead_steps is None else (lead_steps - 1,)
        for h in steps:
            if h >= len(record.values):
                continue
            actual = actuals.get(record.origin + h * record.step_s)
            if actual is not None:
                result.add(record.quantiles, record.values[h], actual)
    return result
