"""The best trailing-peak rule per VM (a bound): its rules and counts by hand, the price's choice
against every combination of rules, and ``presculpt bench peak-bound`` on the trace slice."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from presculpt.cli import main
from presculpt.coordinator.replay import frontier


def test_a_rule_is_the_factor_times_the_trailing_peak_within_floor_and_maximum() -> None:
    demand = np.array([[1.0, 3.0, 2.0, np.nan, 0.5, 0.5, 0.5]])
    a = frontier.rule_allocation(demand, np.array([5.0]), 0.1, 2, 1.5)
    # the maximum before any demand; then 1.5x the peak of the two steps before (capped at 5);
    # no allocation where the demand is unknown, as every policy
    np.testing.assert_allclose(a, [[5.0, 1.5, 4.5, np.nan, 3.0, 0.75, 0.75]])
    assert frontier.rule_allocation(np.array([[0.01, 0.01]]), np.array([5.0]), 0.1, 1, 1.0)[0, 1] == 0.1


def test_rule_costs_count_allocation_violations_slack_and_resizes() -> None:
    demand = np.array([[1.0, 1.0, 4.0, 1.0]])
    scored = np.array([[False, True, True, True]])
    costs = frontier.rule_costs(demand, np.array([8.0]), 0.1, scored, window_hours=(1 / 12,), factors=(1.0,))
    assert costs.rules == ((1 / 12, 1.0), (float("inf"), float("inf")))
    # the one-step peak: 8 (no demand yet), 1, 1, 4 -> scored 1, 1, 4 against demand 1, 4, 1
    assert costs.allocation[0].tolist() == [6.0, 24.0]
    assert costs.violations[0].tolist() == [1, 0]  # the jump to 4
    assert costs.slack[0].tolist() == [3.0, 18.0]
    assert costs.resizes[0].tolist() == [2, 0]  # 8 -> 1 and 1 -> 4, as the replay counts them
    assert costs.steps == 3


def test_the_price_picks_rules_no_combination_beats_at_their_violations() -> None:
    """At any price, each VM's cheapest rule gives a fleet that no other choice of rules beats:
    none with as few violations has less allocation."""
    rng = np.random.default_rng(3)
    demand = rng.gamma(0.6, 2.0, (3, 600))
    demand[1, ::37] *= 6  # bursts
    scored = np.zeros_like(demand, bool)
    scored[:, 100:] = True
    costs = frontier.rule_costs(demand, np.array([40.0, 60.0, 30.0]), 0.1, scored,
                                window_hours=(0.5, 2, 12), factors=(1.0, 1.3, 2.0))
    combos = list(itertools.product(range(len(costs.rules)), repeat=3))
    alloc = np.array([sum(costs.allocation[i, j] for i, j in enumerate(c)) for c in combos])
    viol = np.array([sum(costs.violations[i, j] for i, j in enumerate(c)) for c in combos])
    for price in (0.5, 5.0, 50.0, 500.0):
        chosen = frontier.choose(costs, price)
        a = costs.allocation[np.arange(3), chosen].sum()
        v = costs.violations[np.arange(3), chosen].sum()
        assert not np.any((viol <= v) & (alloc < a - 1e-9)), price
    best = frontier.best_within(costs, 0.01)
    assert best is not None and best.violation <= 0.01
    points = frontier.frontier(costs)
    assert [p.violation for p in points] == sorted((p.violation for p in points), reverse=True)
    assert all(a.slack <= b.slack + 1e-12 for a, b in zip(points, points[1:]))  # less violation, more slack
    assert frontier.best_within(costs, 1e-9) is None or frontier.best_within(costs, 1e-9).violation == 0


def test_peak_bound_command_prints_each_metric_against_the_references(trace_slice: Path, tmp_path: Path,
                                                                      capsys) -> None:
    out = tmp_path / "bound.json"
    assert main(["bench", "peak-bound", "--trace", str(trace_slice), "--memory-violation", "1%",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "chosen with hindsight" in printed and "(autopilot's)" in printed and "frontier" in printed
    data = json.loads(out.read_text())
    cpu, memory = data["metrics"]["cpu"], data["metrics"]["memory"]
    assert memory["budget"] == pytest.approx(0.01) and memory["best"]["violation"] <= 0.01
    assert cpu["budget"] == cpu["references"]["autopilot"]["violation"]
    assert memory["best"]["slack"] <= memory["frontier"][-1]["slack"]  # the safest end holds the most


@pytest.mark.parametrize("argv, message", [
    (["--memory-violation", "150%"], "above 0 and below 100%"),
    (["--cpu-violation", "lots"], "expected a fraction (0.0005), a percent (0.05%) or autopilot, got 'lots'"),
    (["--cpu-violation", "0"], "above 0 and below 100%"),
])
def test_peak_bound_command_rejects_bad_input_in_one_line(trace_slice: Path, argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", "peak-bound", "--trace", str(trace_slice), *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_peak_bound_command_names_a_missing_trace(capsys) -> None:
    assert main(["bench", "peak-bound", "--trace", "/nonexistent"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a directory" in err[0]
