"""The backtest on a tiny trace in the canonical format: every model scored with finite numbers,
and traces it cannot use refused with a message that says why."""

from __future__ import annotations

import math

import pytest

from presculpt.coordinator.forecast.evaluate import BASELINES, improvement, run_evaluation, trace_series
from presculpt.errors import UserError

SCORES = ("pinball", "mase", "coverage_p90", "coverage_p99")


def check_scores(entry: dict, horizon: int) -> None:
    for key in SCORES:
        assert isinstance(entry[key], float) and math.isfinite(entry[key]), key
    assert entry["pinball"] >= 0 and entry["mase"] >= 0
    assert 0.0 <= entry["coverage_p90"] <= entry["coverage_p99"] <= 1.0
    assert len(entry["pinball_by_horizon"]) == horizon
    assert entry["forecasts"] > 0


def test_every_model_is_scored(tiny_trace, tiny_training):
    progress: list[str] = []
    result = run_evaluation(tiny_trace, train_days=3, validation_days=1, train_config=tiny_training,
                            progress=progress.append)
    assert set(result["models"]) == {"lstm", *BASELINES}
    assert result["series"] == 8  # 4 VMs, CPU and memory each
    assert result["horizon"] == 12 and result["train_days"] == 3
    assert result["train_seconds"] >= 0 and result["infer_ms_per_1000_series"] > 0
    for name, entry in result["models"].items():
        check_scores(entry, 12)
        check_scores(entry["memory"], 12)
        assert entry["forecasts"] == entry["memory"]["forecasts"], name
    best, gain = improvement(result)
    assert best in BASELINES and gain < 1.0
    assert progress and "training" in progress[0]


def test_cpu_only_trace_has_no_memory_scores(make_trace, tiny_training):
    trace = make_trace("cpu-only", vms=2, memory=False)
    result = run_evaluation(trace, train_days=3, validation_days=1, train_config=tiny_training,
                            progress=lambda _: None)
    assert result["series"] == 2
    for entry in result["models"].values():
        check_scores(entry, 12)
        assert "memory" not in entry


def test_trace_series_splits_each_vm(tiny_trace):
    series = trace_series(tiny_trace, 3)
    assert [s.metric for s in series] == ["cpu_cores", "memory_mib"] * 4
    assert all(s.train_end == 3 * 288 and len(s.values) == 4 * 288 for s in series)
    assert {s.capacity for s in series if s.metric == "cpu_cores"} == {2.0, 4.0}


def test_too_short_to_test_on(make_trace, tiny_training):
    trace = make_trace("short", days=2)
    with pytest.raises(UserError, match="no VM has data after its first 3 days"):
        run_evaluation(trace, train_days=3, train_config=tiny_training, progress=lambda _: None)


def test_too_short_to_train_on(make_trace, tiny_training):
    trace = make_trace("short-train", days=2.5)
    with pytest.raises(UserError, match="too short to train on"):
        run_evaluation(trace, train_days=2, validation_days=1, train_config=tiny_training, progress=lambda _: None)


def test_not_a_trace(tmp_path, tiny_training):
    with pytest.raises(UserError, match="vms.csv does not exist"):
        run_evaluation(tmp_path, train_config=tiny_training, progress=lambda _: None)
