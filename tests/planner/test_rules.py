"""The per-metric rules read quantile forecasts right: listed, interpolated and extrapolated levels,
exceedance probabilities consistent with those quantiles, and expected shortfall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from presculpt.coordinator.planner.model import Forecast, TierPolicy, VmMemory
from presculpt.coordinator.planner.rules import (
    decide, exceedance, expected_shortfall, provisioned, quantile_at, quantile_grid, violations_avoided)

QUANTILES = (0.1, 0.5, 0.9, 0.99)
HORIZON = 12


def constant(values, horizon: int = HORIZON) -> Forecast:
    return Forecast(quantiles=QUANTILES, values=np.tile(np.asarray(values, dtype=float), (horizon, 1)))


F = constant([1.0, 2.0, 3.0, 4.0])  # one unit per decade of the tail: (4 - 3) / log10(0.1 / 0.01) = 1


@pytest.mark.parametrize("level, expected", [(0.1, 1.0), (0.5, 2.0), (0.9, 3.0), (0.99, 4.0)])
def test_quantile_at_listed_levels(level, expected):
    got = quantile_at(F, level)
    assert got.shape == (HORIZON,)
    np.testing.assert_allclose(got, expected)


@pytest.mark.parametrize("level, expected", [
    (0.05, 0.5),   # below the lowest quantile: linear from zero
    (0.3, 1.5),    # below the median: linear
    # Above it, in the log of the exceedance probability: halfway in demand is the geometric mean
    # of the exceedances (p90 at 0.1, p99 at 0.01: 0.0316 halfway), as in the tail past the top.
    (1 - 0.5 * math.sqrt(0.2), 2.5),
    (1 - 0.1 * math.sqrt(0.1), 3.5),
    (0.95, 3.0 + math.log10(2.0)),  # halving p90's exceedance adds a third of a decade's step
])
def test_quantile_at_interpolates(level, expected):
    np.testing.assert_allclose(quantile_at(F, level), expected)


@pytest.mark.parametrize("level, expected", [
    (0.995, 4.0 + math.log10(2.0)),
    (0.999, 5.0),   # one decade past 0.99
    (0.9999, 6.0),  # two decades
])
def test_quantile_at_extrapolates_the_tail(level, expected):
    np.testing.assert_allclose(quantile_at(F, level), expected)


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0, 4.0], [0.2, 0.3, 0.9, 2.5], [5.0, 5.0, 5.5, 5.6]])
def test_quantile_at_is_monotone_in_level(values):
    f = constant(values)
    levels = np.linspace(0.01, 0.9999, 400)
    got = np.array([quantile_at(f, p)[0] for p in levels])
    assert np.all(np.diff(got) >= -1e-12)
    assert got[-1] > values[-1]  # the tail goes on past the top quantile


@pytest.mark.parametrize("allocation, expected", [(0.0, 1.0), (0.5, 0.95), (2.0, 0.5), (4.0, 0.01), (5.0, 0.001)])
def test_exceedance_at_known_points(allocation, expected):
    got = exceedance(F, allocation)
    assert got.shape == (HORIZON,)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0, 4.0], [0.2, 0.3, 0.9, 2.5], [1000.0, 2500.0, 2600.0, 4000.0]])
@pytest.mark.parametrize("p", [0.02, 0.1, 0.25, 0.5, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999])
def test_exceedance_is_consistent_with_quantile_at(values, p):
    f = constant(values)
    np.testing.assert_allclose(exceedance(f, float(quantile_at(f, p)[0])), 1 - p, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0, 4.0], [0.2, 0.3, 0.9, 2.5]])
def test_exceedance_decreases_with_the_allocation(values):
    f = constant(values)
    allocations = np.linspace(0.0, 3 * values[-1], 300)
    got = np.array([exceedance(f, a)[0] for a in allocations])
    assert np.all(np.diff(got) < 0)  # strictly: every extra unit lowers the risk
    assert got[0] == pytest.approx(1.0)
    assert np.all((got > 0) & (got <= 1))


def test_expected_shortfall_is_zero_far_above_the_forecast():
    assert expected_shortfall(F, 10.0) == 0.0
    assert expected_shortfall(F, 1e6) == 0.0


def test_expected_shortfall_decreases_with_the_allocation():
    allocations = np.linspace(0.0, 6.0, 61)
    got = np.array([expected_shortfall(F, a) for a in allocations])
    assert np.all(np.diff(got) <= 0)
    # strictly while the allocation is below the highest demand the probability grid reaches (~4.3)
    assert np.all(np.diff(got[allocations <= 4.2]) < 0)
    assert got[allocations >= 4.4].max() == 0.0
    # At zero allocation it is the mean demand (over the probability grid) summed over the horizon.
    assert got[0] == pytest.approx(HORIZON * quantile_grid(F)[0].mean())
    assert 20.0 < got[0] < 30.0  # mean demand of about 2 cores for 12 steps


def test_expected_shortfall_sums_over_the_horizon():
    one = constant([1.0, 2.0, 3.0, 4.0], horizon=1)
    assert expected_shortfall(F, 1.5) == pytest.approx(HORIZON * expected_shortfall(one, 1.5))


def test_quantile_grid_agrees_with_quantile_at():
    levels = np.array([0.005, 0.05, 0.1, 0.42, 0.9, 0.95, 0.99, 0.993, 0.995])
    grid = quantile_grid(F, tuple(levels.tolist()))
    assert grid.shape == (HORIZON, len(levels))
    for k, p in enumerate(levels):
        np.testing.assert_allclose(grid[:, k], quantile_at(F, p), rtol=1e-12)


def test_decide_caps_a_presculpt_at_the_ceiling():
    from presculpt.coordinator.planner.model import TierPolicy, VmMemory
    from presculpt.coordinator.planner.rules import decide

    d = decide("CPU", "cores", constant([5.0, 8.0, 10.0, 12.0]), current=2.0, floor=0.1, ceiling=3.0,
               tier=TierPolicy("silver", quantile=0.99, margin=0.10, grow_headroom=0.10), memory=VmMemory(), below_steps=0, step=1)
    assert (d.kind, d.target) == ("presculpt", 3.0)
    assert d.need == pytest.approx(12.0 * 1.1)  # the need is reported uncapped


# A forecast whose p99 is 2 cores but whose p99.9 is the VM's maximum, 8 (a rare burst to the top).
BURSTY = Forecast((0.5, 0.9, 0.99, 0.999), np.tile([1.0, 1.5, 2.0, 8.0], (12, 1)))


@pytest.mark.parametrize("violation_cost, provisioned_cores", [
    # A violated step costs 100 vCPU-steps: covering the 0.9% of steps above p99 with 6 more cores
    # does not pay (2 + 100 x 0.009 < 8), nor does any part of it (the first core past p99 avoids
    # 0.38% of steps), while every core up to p99 does.
    (100.0, 2.0),
    # 1000: the first cores past p99 pay, the last ones not: p99 + 6 x 0.6 decades (the tail
    # thins by a decade per 6 cores; the sizing levels are tenths of a decade apart).
    (1000.0, 5.6),
    (10000.0, 8.0),  # ten thousand: cover the burst
])
def test_cost_optimal_sizing_covers_the_tail_only_when_it_pays(violation_cost, provisioned_cores):
    tier = TierPolicy("t", margin=0.0, violation_cost=violation_cost)
    assert provisioned(BURSTY, tier, 8.0) == pytest.approx(np.full(12, provisioned_cores), rel=1e-6)


def test_cost_optimal_sizing_does_not_pay_for_demand_above_the_ceiling():
    # The burst is to 8 cores on a 4-core VM: a violation whatever the allocation. Only the mass
    # between 2 and 4 cores (p99 up to about p99.54) is at stake: 250 x 0.0054 = 1.3 < 2 more
    # cores. Counting the 0.46% above 4 cores too, holding 4 would pay (250 x 0.009 = 2.25 > 2).
    above = TierPolicy("t", margin=0.0, violation_cost=250.0)
    assert provisioned(BURSTY, above, 4.0) == pytest.approx(np.full(12, 2.0), rel=1e-6)
    # A price that covers the burst on an 8-core VM holds all 4 cores of the small one.
    cover = TierPolicy("t", margin=0.0, violation_cost=10000.0)
    assert provisioned(BURSTY, cover, 4.0) == pytest.approx(np.full(12, 4.0), rel=1e-6)


def test_cost_optimal_sizing_never_below_the_tiers_least_level():
    # A violated step at 1 vCPU-step: not even the core from p50 to p90 pays (0.5 cores to avoid
    # 0.4 of a step), so the cost-optimal level lies below p95 ...
    cheap = TierPolicy("t", margin=0.0, violation_cost=1.0)
    p95 = quantile_at(BURSTY, 0.95)  # 1.5 + 0.5 x log(0.1/0.05)/log(0.1/0.01), about 1.65
    assert p95 == pytest.approx(np.full(12, 1.5 + 0.5 * math.log10(2)), rel=1e-9)
    assert (provisioned(BURSTY, cheap, 8.0) < p95 - 0.1).all()
    # ... and min_level holds it at p95; a level above it that pays is still chosen.
    floored = TierPolicy("t", margin=0.0, violation_cost=1.0, min_level=0.95)
    assert provisioned(BURSTY, floored, 8.0) == pytest.approx(p95, rel=1e-6)
    assert provisioned(BURSTY, TierPolicy("t", margin=0.0, violation_cost=100.0, min_level=0.95), 8.0) == \
        pytest.approx(np.full(12, 2.0), rel=1e-6)
    d = decide("CPU", "cores", BURSTY, 1.0, 0.1, 8.0, floored, VmMemory(), 0, 10)
    assert "cost-optimal level (at least p95, violation cost 1 vCPU-steps)" in d.reason
    assert floored.for_memory.min_level is None
    for bad in (0.3, 1.0):
        with pytest.raises(ValueError, match="min_level must be in"):
            TierPolicy("t", violation_cost=1.0, min_level=bad)


def test_cost_optimal_sizing_in_a_decision_and_not_for_memory():
    tier = TierPolicy("t", margin=0.0, violation_cost=100.0, grow_headroom=0.0)
    d = decide("CPU", "cores", BURSTY, 1.0, 0.1, 8.0, tier, VmMemory(), 0, 10)
    assert d.kind == "presculpt" and d.target == pytest.approx(2.0)
    assert "cost-optimal level (violation cost 100 vCPU-steps)" in d.reason
    assert tier.for_memory.violation_cost is None
    with pytest.raises(ValueError, match="violation_cost"):
        TierPolicy("t", violation_cost=0.0)


def test_violations_avoided_counts_only_demand_up_to_the_ceiling():
    # P(demand > 2) = 1%, P(demand > 8) = 0.1%, P(demand > 4) = 1% x 10^(-1/3) = 0.46% (a third of
    # the way from p99 to p99.9 in demand is a third of the decade)
    assert violations_avoided(BURSTY, 2.0, 8.0, 8.0) == pytest.approx(12 * 0.009)
    assert violations_avoided(BURSTY, 2.0, 8.0, 4.0) == pytest.approx(12 * (0.01 - 0.01 * 10 ** (-1 / 3)))
    assert violations_avoided(BURSTY, 8.0, 2.0, 8.0) == pytest.approx(-12 * 0.009)  # a shrink adds them


def test_violations_avoided_reads_the_next_step_over_the_horizon():
    # Sizing reads the next step; later steps' wider tails (here every step after the first is 4x
    # as wide) do not price the change: the next decisions see them.
    widening = Forecast(BURSTY.quantiles, np.vstack([BURSTY.values[:1], np.tile([1.0, 6.0, 8.0, 32.0], (11, 1))]))
    assert violations_avoided(widening, 2.0, 8.0, 8.0) == pytest.approx(violations_avoided(BURSTY, 2.0, 8.0, 8.0))
    assert violations_avoided(widening, 2.0, 8.0, 8.0) == pytest.approx(12 * 0.009)


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0, 4.0], [0.2, 0.3, 0.9, 2.5], [5.0, 5.0, 5.5, 5.6]])
def test_levels_added_to_a_forecast_read_as_the_planner_reads_between_its_quantiles(values):
    # The forecaster adds levels to forecasts (the learned next step's): where it adds them must
    # be where the planner already read them, or adding levels would change every decision.
    from presculpt.coordinator.forecast.base import at_levels

    f = constant(values)
    levels = (0.05, 0.1, 0.3, 0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)
    np.testing.assert_allclose(at_levels(f.values, QUANTILES, levels), quantile_grid(f, levels), rtol=1e-12)
    finer = Forecast(levels, at_levels(f.values, QUANTILES, levels))
    for p in (0.2, 0.75, 0.93, 0.985):
        np.testing.assert_allclose(quantile_at(finer, p), quantile_at(f, p), rtol=1e-12)
