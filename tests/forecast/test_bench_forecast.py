"""``presculpt bench forecast``: the synthetic histories look like the real thing, the step-by-step
breakdown does what ``predict`` does, and the command writes its figures."""

from __future__ import annotations

import json

import numpy as np

from presculpt import cli
from presculpt.bench_forecast import STAGES, load_forecaster, staged_predict, synthetic_histories
from presculpt.coordinator.forecast.base import DAY_STEPS, SeriesHistory
from presculpt.coordinator.forecast.features import MIN_HISTORY


def test_synthetic_histories():
    histories = synthetic_histories(40, days=3.0, seed=1)
    assert len(histories) == 40 and len({h.key for h in histories}) == 40
    assert [h.metric for h in histories[:4]] == ["cpu_cores", "memory_mib"] * 2
    for h in histories:
        assert len(h.values) == 3 * DAY_STEPS
        known = h.values[~np.isnan(h.values)]
        assert len(known) >= MIN_HISTORY
        assert (known >= 0).all() and (known <= 1.05 * h.capacity + 1e-9).all()
        assert known.std() > 0  # not flat
    assert any(np.isnan(h.values).any() for h in histories)  # some gaps, as agents go away
    again = synthetic_histories(40, days=3.0, seed=1)
    np.testing.assert_array_equal(histories[7].values, again[7].values)


def test_staged_predict_matches_predict():
    histories = synthetic_histories(30, days=2.0)
    histories.append(SeriesHistory("short", "cpu_cores", histories[0].origin, histories[0].values[-100:], 4.0))
    forecaster, label = load_forecaster(None, threads=1)
    assert label == "untrained default"
    expected = forecaster.predict(histories)
    got, seconds = staged_predict(forecaster, histories)
    assert set(seconds) == set(STAGES) and all(s >= 0 for s in seconds.values())
    assert [f.key for f in got] == [f.key for f in expected]
    assert got[-1].cold_start and not got[0].cold_start
    for a, b in zip(got, expected):
        assert (a.model, a.cold_start) == (b.model, b.cold_start)
        np.testing.assert_allclose(a.values, b.values, rtol=1e-6)


def test_bench_writes_json(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    code = cli.main(["bench", "forecast", "--series", "20", "--days", "2", "--repeat", "2", "--threads", "1",
                     "--profile", "5", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out_json.read_text())
    assert data["series"] == 20 and data["repeat"] == 2
    assert 0 < data["seconds_best"] <= data["seconds_median"]
    assert set(data["breakdown"]) == set(STAGES)
    assert data["breakdown"]["network"] > 0 and data["breakdown"]["windows"] > 0
    assert "untrained default (weights do not change the speed" in out
    assert "where the time goes" in out and "network" in out
    assert "under cProfile" in out and "predictor.py" in out


def test_bench_with_a_bad_checkpoint(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    code = cli.main(["bench", "forecast", "--series", "4", "--model", str(bad)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines()[-1].startswith(f"presculpt: error: --model {bad}: not a forecaster checkpoint")


def test_bench_with_a_missing_checkpoint(capsys, tmp_path):
    code = cli.main(["bench", "forecast", "--series", "4", "--model", str(tmp_path / "nope.pt")])
    assert code == 1
    assert "no such file" in capsys.readouterr().err


def test_bench_refuses_histories_too_short_for_the_network(capsys):
    code = cli.main(["bench", "forecast", "--series", "4", "--days", "1"])
    assert code == 1
    assert "every series is a cold start" in capsys.readouterr().err
