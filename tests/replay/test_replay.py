"""The replay: its scores on hand-made allocations, the reference policies' rules, causality, and
every policy on a slice of the real Bitbrains trace (6 VMs, 9 days) through the command line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from presculpt.cli import main
from presculpt.coordinator.forecast.lstm.module import ModelConfig
from presculpt.coordinator.forecast.lstm.training import TrainConfig
from presculpt.coordinator.replay import baselines
from presculpt.coordinator.forecast.nextstep import MEMORY, NextStepConfig, next_features
from presculpt.coordinator.forecast.tail import TailConfig, tail_ceiling
from presculpt.coordinator.replay.forecasts import CausalForecasts, ReplayForecastConfig
from presculpt.coordinator.replay.run import POLICIES, parse_policies, run_replay
from presculpt.coordinator.replay.score import score
from presculpt.coordinator.replay.trace import DAY_STEPS, STEP_S, load_replay_trace
from presculpt.errors import UserError



# -- scores ---------------------------------------------------------------------------------------
def test_scores_follow_the_definitions() -> None:
    demand = np.array([[1.0, 2.0, 3.0, 4.0]])
    alloc = np.array([[2.0, 2.0, 2.0, 5.0]])
    scored = np.array([[True, True, True, True]])
    s = score(demand, alloc, scored)
    assert s["violation"] == pytest.approx(1 / 4)  # only 3 > 2
    assert s["unmet"] == pytest.approx(1 / 10)
    assert s["slack"] == pytest.approx((1 + 0 + 0 + 1) / 11)
    # one change (2 -> 5) in 4 steps = 4/288 of a day
    assert s["resizes_per_vm_day"] == pytest.approx(1 / (4 / DAY_STEPS))


def test_unscored_and_unknown_steps_do_not_count() -> None:
    demand = np.array([[9.0, 1.0, np.nan, 1.0]])
    alloc = np.array([[1.0, 1.0, 1.0, 1.0]])
    scored = np.array([[False, True, True, True]])
    s = score(demand, alloc, scored)
    assert s["violation"] == 0.0 and s["slack"] == 0.0 and s["resizes_per_vm_day"] == 0.0


# -- reference policies ---------------------------------------------------------------------------
def test_reactive_grows_on_high_and_shrinks_after_six_quiet_steps() -> None:
    demand = np.array([[0.1] * 8 + [3.5, 3.5]])
    alloc = baselines.reactive(demand, np.array([8.0]), 0.1)
    assert alloc[0, 0] == 8.0  # starts at the maximum
    # steps 0-5 under 0.3: the allocation of step 6 (decided after step 5) is 0.8x
    assert alloc[0, 5] == 8.0 and alloc[0, 6] == pytest.approx(6.4)
    assert alloc[0, 9] == pytest.approx(6.4)  # 3.5 / 6.4 = 0.55: neither rule fires
    demand = np.array([[0.1] * 30 + [5.0, 5.0, 5.0]])
    high = baselines.reactive(demand, np.array([8.0]), 0.1)
    assert high[0, 30] < 5.0 / 0.8  # low enough that 5 cores is above 0.8 utilisation
    assert high[0, 31] == pytest.approx(high[0, 30] * 1.5)  # grows 1.5x the step after
    assert high[0, 32] == pytest.approx(min(8.0, high[0, 31] * 1.5)) and high[0, 32] <= 8.0


def test_autopilot_memory_is_the_day_peak_plus_ten_percent() -> None:
    demand = np.full((1, 2 * DAY_STEPS), 1000.0)
    demand[0, 10] = 3000.0
    alloc = baselines.autopilot_memory(demand, np.array([8192.0]))
    assert alloc[0, 0] == 8192.0
    assert alloc[0, 11] == pytest.approx(3300.0)
    assert alloc[0, 10 + DAY_STEPS + 1] == pytest.approx(1100.0)  # the peak left the window


def test_histogram_percentiles_weight_recent_samples_more() -> None:
    hist = baselines.DecayingHistograms(1, 0.01, 100.0, half_life=10)
    for _ in range(50):
        hist.add(np.array([1.0]))
    for _ in range(20):
        hist.add(np.array([4.0]))
    p90 = hist.percentile(0.9)[0]
    assert 4.0 <= p90 <= 4.0 * 1.06  # the upper edge of 4.0's bucket
    assert hist.percentile(0.1)[0] <= 1.06


@pytest.mark.parametrize("policy", [baselines.vpa_cpu, baselines.autopilot_cpu])
def test_reference_policies_are_causal(policy) -> None:
    rng = np.random.default_rng(0)
    demand = rng.gamma(2.0, 0.5, size=(3, 600))
    changed = demand.copy()
    changed[:, 400:] *= 3
    a, b = policy(demand, np.full(3, 8.0)), policy(changed, np.full(3, 8.0))
    np.testing.assert_array_equal(a[:, :401], b[:, :401])  # step 400's allocation predates step 400
    assert not np.array_equal(a[:, 401:], b[:, 401:])


def test_policy_names_are_checked() -> None:
    assert parse_policies("all") == list(POLICIES)
    assert parse_policies("vpa, static") == ["vpa", "static"]
    with pytest.raises(UserError, match="unknown policy 'hpa'"):
        parse_policies("static,hpa")
    assert parse_policies("vpa,hindsight-30m,hindsight-12h") == ["vpa", "hindsight-30m", "hindsight-12h"]
    assert "hindsight-30m" not in parse_policies("all")  # a bound, not a policy
    for bad in ("hindsight-7m", "hindsight-0h"):
        with pytest.raises(UserError, match="whole number of 5-minute steps"):
            parse_policies(bad)


def test_hindsight_takes_the_peak_of_the_window_ahead() -> None:
    demand = np.array([[1.0, 3.0, 2.0, np.nan, 5.0, 1.0, np.nan]])
    np.testing.assert_array_equal(baselines.hindsight(demand, 1), demand)
    np.testing.assert_array_equal(baselines.hindsight(demand, 2), [[3.0, 3.0, 2.0, np.nan, 5.0, 1.0, np.nan]])
    np.testing.assert_array_equal(baselines.hindsight(demand, 3), [[3.0, 3.0, 5.0, np.nan, 5.0, 1.0, np.nan]])
    rng = np.random.default_rng(5)
    noisy = rng.gamma(0.5, 2.0, (4, 500))
    wide = baselines.hindsight(noisy, 12)
    assert np.all(wide >= noisy)  # never short of demand
    assert np.all(baselines.hindsight(noisy, 36) >= wide)  # a longer window holds more


# -- a slice of the real trace --------------------------------------------------------------------
@pytest.fixture(scope="module")
def replayed(trace_slice: Path) -> dict:
    small = ReplayForecastConfig(
        retrain_days=1.0, validation_days=1.0,
        train=TrainConfig(epochs=2, samples_per_epoch=3000, threads=1),
        retrain=TrainConfig(epochs=1, samples_per_epoch=2000, threads=1),
        model=ModelConfig(hidden=8, head_hidden=16))
    return run_replay(trace_slice, POLICIES, warmup_days=7.0, forecast_config=small)


def test_every_policy_is_scored_on_both_metrics(replayed: dict) -> None:
    assert set(replayed["policies"]) == set(POLICIES)
    for name, entry in replayed["policies"].items():
        for metric in ("cpu", "memory"):
            s = entry[metric]
            assert s["vm_days"] == pytest.approx(replayed["vms"] * 2, rel=0.02), (name, metric)  # 9 days - 7 of warm-up
            for key in ("violation", "unmet", "slack"):
                assert 0.0 <= s[key] <= 1.0, (name, metric, key)


def test_static_violates_only_above_the_maximum(replayed: dict) -> None:
    static = replayed["policies"]["static"]["cpu"]
    assert static["resizes_per_vm_day"] == 0.0
    assert static["violation"] == pytest.approx(replayed["cpu_demand_above_maximum"])


def test_presculpt_trains_causally_and_shapes_the_vms(replayed: dict) -> None:
    details = replayed["presculpt"]
    assert details["trainings"] == 2  # at the end of the warm-up (day 7), then a day later (day 8)
    assert details["actions"].get("presculpt", 0) > 0 and details["actions"].get("downgrade", 0) > 0
    presculpt, static = replayed["policies"]["presculpt"], replayed["policies"]["static"]
    assert presculpt["cpu"]["slack"] < static["cpu"]["slack"]
    assert presculpt["memory"]["slack"] < static["memory"]["slack"]
    assert presculpt["cpu"]["resizes_per_vm_day"] < 24 and presculpt["memory"]["resizes_per_vm_day"] < 24


def test_loaded_slice_has_the_warmup_unscored(trace_slice: Path) -> None:
    trace = load_replay_trace(trace_slice)
    scored = trace.scored()
    assert not scored[:, : 7 * DAY_STEPS].any() and scored[:, 7 * DAY_STEPS + 1].all()


def test_replay_command_prints_the_table_and_writes_json(trace_slice: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "replay.json"
    assert main(["replay", "--trace", str(trace_slice), "--policy", "static,autopilot,hindsight-1h",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "autopilot" in printed and "SLACK" in printed and "a bound, not a policy" in printed
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"static", "autopilot", "hindsight-1h"}
    bound = data["policies"]["hindsight-1h"]
    assert bound["memory"]["violation"] == 0.0  # it sees the peak coming; CPU only misses above the maximum
    assert bound["cpu"]["violation"] == pytest.approx(data["cpu_demand_above_maximum"])
    assert bound["cpu"]["slack"] < data["policies"]["autopilot"]["cpu"]["slack"]
    assert set(data["policies"]["autopilot"]["cpu"]) >= {"violation", "unmet", "slack", "resizes_per_vm_day"}


@pytest.mark.parametrize("argv, message", [
    (["--policy", "hpa"], "unknown policy 'hpa'"),
    (["--plot", "x.txt"], "must end in"),
    (["--model", "/nonexistent.pt"], "no such file"),
])
def test_replay_command_rejects_bad_input_in_one_line(trace_slice: Path, argv, message, capsys) -> None:
    assert main(["replay", "--trace", str(trace_slice), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_replay_forecasts_take_the_learned_next_step_as_the_coordinator_serves_it(trace_slice: Path) -> None:
    """The replay computes the learned tail's inputs for every origin of a series at once; the
    coordinator for the next step of each history. Both must give the same first step."""
    trace = load_replay_trace(trace_slice)
    config = ReplayForecastConfig(
        retrain_days=10.0, validation_days=1.0, train=TrainConfig(epochs=1, samples_per_epoch=2000, threads=1),
        model=ModelConfig(hidden=8, head_hidden=16),
        # the slice's 6 VMs are too few by default
        next_steps=(NextStepConfig(trees=20, min_exceedances=5), replace(MEMORY, trees=20, min_exceedances=5)))
    forecasts = CausalForecasts(trace, config)
    start = 7 * DAY_STEPS
    blocks = forecasts.block(start, start + 12)
    block = blocks["cpu_cores"]
    tail, memory_tail = forecasts.model.next_steps
    assert (tail.metric, memory_tail.metric) == ("cpu_cores", "memory_mib")
    levels = forecasts.levels("cpu_cores")
    learned_levels = [j for j, q in enumerate(levels) if q in tail.levels]
    checked = 0
    for i in range(len(trace.vm_ids)):
        lo, capacity = int(trace.first[i]), float(trace.max_vcpus[i])
        ceiling = tail_ceiling(trace.cpu[i, lo:start], capacity, TailConfig())
        for k in (0, 11):
            t = start + k
            x = next_features(trace.cpu[i, lo:t], capacity, float(trace.start_ts + t * STEP_S))
            learned = np.minimum(tail.predict(x[None])[0] * capacity, ceiling)
            first = block[i, k, 0].astype(np.float64)
            body = first[:learned_levels[0]]
            expected = np.maximum.accumulate(np.concatenate([body, learned]))[len(body):]
            assert np.allclose(first[learned_levels], expected, rtol=1e-4, atol=1e-6), (trace.vm_ids[i], k)
            checked += 1
    assert checked == 2 * len(trace.vm_ids)
    # Memory's learned levels at every step of the horizon: the next step's, raised only where a
    # later step's body (the network's levels below them) is higher.
    memory_levels = [j for j, q in enumerate(forecasts.levels("memory_mib")) if q in memory_tail.levels]
    known = ~np.isnan(blocks["memory_mib"][:, :, 0, 0])
    assert known.any()
    values = blocks["memory_mib"][known].astype(np.float64)  # (forecasts, horizon, levels)
    learned, body_top = values[:, 0, memory_levels], values[:, :, memory_levels[0] - 1]
    clean = body_top[:, 0] < learned[:, 0]  # the first step's learned levels are the model's own
    expected = np.maximum(learned[:, None, :], body_top[:, :, None])
    assert clean.mean() > 0.5
    assert np.allclose(values[clean][:, :, memory_levels], expected[clean], rtol=1e-5)


def test_a_replay_takes_one_learned_next_step_per_metric() -> None:
    with pytest.raises(ValueError, match="one learned next step per metric, got cpu_cores, memory_mib, cpu_cores"):
        ReplayForecastConfig(next_steps=(NextStepConfig(), MEMORY, NextStepConfig(trees=20)))
