"""Two short epochs on synthetic series, then save, reload and compare: the checkpoint is the
model, its calibration and its metadata, and a reloaded forecaster predicts exactly the same."""

from __future__ import annotations

import numpy as np
import pytest

from presculpt.coordinator.forecast.base import DAY_STEPS, SeriesHistory
from presculpt.coordinator.forecast.evaluate import Series, train_lstm
from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster

START_TS = 1_700_006_400.0


@pytest.fixture
def series(make_series) -> list[Series]:
    out = []
    for i in range(4):
        cpu = make_series(4.0, seed=i, level=0.5 + i)
        mem = make_series(4.0, seed=10 + i, level=1000.0 * (i + 1), depth=0.1)
        out.append(Series(f"vm-{i}/cpu_cores", "cpu_cores", cpu, START_TS, 8.0, 3 * DAY_STEPS))
        out.append(Series(f"vm-{i}/memory_mib", "memory_mib", mem, START_TS, 8192.0, 3 * DAY_STEPS,
                          workload_class="db" if i % 2 else "", customer="acme"))
    return out


def histories(series: list[Series]) -> list[SeriesHistory]:
    """Each series up to the end of its training part, as the coordinator would hand it over."""
    return [SeriesHistory(s.key, s.metric, s.start_ts + s.train_end * 300.0, s.values[:s.train_end], s.capacity,
                          s.workload_class, s.customer) for s in series]


def test_train_save_reload_predicts_the_same(series, tiny_model, tiny_training, tmp_path):
    forecaster, metadata = train_lstm(series, tiny_model, tiny_training, validation_days=1.0)
    assert metadata["epochs"] >= 1 and metadata["train_windows"] > 0
    assert np.isfinite(metadata["validation_loss"])
    path = tmp_path / "model.pt"
    forecaster.save(path)
    reloaded = LstmForecaster.load(path)
    assert reloaded.quantiles == forecaster.quantiles and reloaded.horizon == forecaster.horizon
    assert reloaded.model.config == tiny_model
    np.testing.assert_array_equal(reloaded.calibration, forecaster.calibration)
    assert reloaded.metadata == forecaster.metadata
    before = forecaster.predict(histories(series))
    after = reloaded.predict(histories(series))
    assert all(not f.cold_start for f in before)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.values, b.values)


def test_training_is_reproducible(series, tiny_model, tiny_training):
    one, _ = train_lstm(series, tiny_model, tiny_training, validation_days=1.0)
    two, _ = train_lstm(series, tiny_model, tiny_training, validation_days=1.0)
    for a, b in zip(one.predict(histories(series)), two.predict(histories(series))):
        np.testing.assert_allclose(a.values, b.values, rtol=1e-6)


def test_load_refuses_other_files(tmp_path):
    import torch

    path = tmp_path / "other.pt"
    torch.save({"format": 999}, path)
    with pytest.raises(ValueError, match="not a Presculpt LSTM checkpoint"):
        LstmForecaster.load(path)
