"""Online accuracy of stored forecasts."""

from __future__ import annotations

import pytest

from presculpt.coordinator.accuracy import pinball, tally
from presculpt.coordinator.model import ForecastRecord

LEVELS = (0.1, 0.5, 0.9, 0.99)


def record(origin: float, steps) -> ForecastRecord:
    return ForecastRecord("h", "u", "cpu_cores", origin, 300.0, "m", False, LEVELS, tuple(steps))


def test_pinball_is_asymmetric():
    assert pinball(0.9, actual=2.0, forecast=1.0) == pytest.approx(0.9)
    assert pinball(0.9, actual=1.0, forecast=2.0) == pytest.approx(0.1)
    assert pinball(0.5, actual=3.0, forecast=3.0) == 0


def test_tally_scores_known_outcomes_only():
    band = (1.0, 2.0, 3.0, 4.0)
    records = [record(0.0, [band, band]), record(300.0, [band, band])]
    actuals = {0.0: 2.0, 300.0: 3.5}  # the step at 600 has no outcome yet
    result = tally(records, actuals).result()
    assert result.count == 3  # steps 0 and 300 of the first forecast, 300 of the second
    first_step = tally(records, actuals, lead_steps=1).result()
    assert first_step.count == 2
    assert first_step.coverage_p90 == pytest.approx(0.5)  # 2.0 <= 3.0 yes; 3.5 <= 3.0 no
    assert first_step.coverage_p99 == pytest.approx(1.0)


def test_empty_is_zero():
    assert tally([], {}).result().count == 0
