"""The learned next-step tail of CPU: causal features, a tail that depends on the VM's state,
persistence, and refining only what it learned."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from presculpt.coordinator.forecast.base import DAY_STEPS, QuantileForecast, SeriesHistory, at_levels
from presculpt.coordinator.forecast.evaluate import Series
from presculpt.coordinator.forecast.tail import TailConfig, tail_ceiling
from presculpt.coordinator.forecast.nextstep import (
    FEATURES,
    HISTORY_STEPS,
    LOG_OFFSET,
    MEMORY,
    NextStepConfig,
    NextStepTail,
    features,
    next_features,
)

SIZE = 4.0
CONFIG = NextStepConfig(trees=60, min_exceedances=10)  # 10,000 origins: the tests' small fleets
IDLE, BUSY = 0.05 * SIZE, 0.9 * SIZE


def two_state(steps: int, seed: int, mean_run: float = 50.0) -> np.ndarray:
    """Runs of idle and busy steps of geometric length (mean ``mean_run``), a little noise."""
    rng = np.random.default_rng(seed)
    out, busy = np.empty(steps), bool(seed % 2)
    t = 0
    while t < steps:
        run = int(rng.geometric(1 / mean_run))
        out[t:t + run] = BUSY if busy else IDLE
        t += run
        busy = not busy
    return out * rng.uniform(0.97, 1.03, steps)


def series(n: int = 10, days: float = 10, train_days: float = 8, seed: int = 0) -> list[Series]:
    steps, train = int(days * DAY_STEPS), int(train_days * DAY_STEPS)
    return [Series(f"h/vm{k}/cpu_cores", "cpu_cores", two_state(steps, seed + k), 0.0, SIZE, train) for k in range(n)]


@pytest.fixture(scope="module")
def trained() -> tuple[NextStepTail, list[Series]]:
    data = series()
    model = NextStepTail.fit(data, CONFIG)
    assert model is not None
    return model, data


def test_features_read_only_the_values_before_each_origin_and_serving_computes_the_same():
    rng = np.random.default_rng(3)
    values = rng.gamma(0.3, 0.5, 3 * DAY_STEPS + HISTORY_STEPS)  # spiky
    values[rng.random(len(values)) < 0.02] *= 20
    values[500:520] = np.nan  # a gap in the record
    every = features(values, SIZE, 1_000_000.0)
    assert every.shape == (len(values) + 1, len(FEATURES))
    for t in (HISTORY_STEPS, HISTORY_STEPS + 777, len(values)):
        changed = values.copy()
        changed[t:] = 99.0  # the future must not matter
        assert np.array_equal(features(changed, SIZE, 1_000_000.0)[t], every[t], equal_nan=True)
        served = next_features(values[:t], SIZE, 1_000_000.0 + t * 300)
        assert np.allclose(served, every[t], rtol=1e-5, equal_nan=True)


def test_the_tail_follows_the_state_and_is_calibrated_out_of_sample(trained):
    model, data = trained
    p90 = model.levels.index(0.9)
    idle_rows, busy_rows, covered = [], [], []
    for s in data:
        origins = np.arange(s.train_end, len(s.values))
        x = features(s.values, SIZE, s.start_ts, origins)
        learned = model.predict(x)
        last = s.values[origins - 1]
        idle_rows.append(learned[last < 0.5 * SIZE, p90])
        busy_rows.append(learned[last > 0.5 * SIZE, p90])
        covered.append(s.values[origins] / SIZE <= learned[:, p90])
    # One step after an idle step the VM is still idle 98% of the time, after a busy one busy:
    # the 90th percentile is the state's level, not a tail pooled over both.
    assert np.median(np.concatenate(idle_rows)) == pytest.approx(0.05, abs=0.03)
    assert np.median(np.concatenate(busy_rows)) == pytest.approx(0.9, abs=0.06)
    assert np.mean(np.concatenate(covered)) == pytest.approx(0.9, abs=0.04)


def test_a_saved_tail_predicts_the_same_and_one_of_other_features_is_refused(trained):
    model, data = trained
    x = features(data[0].values, SIZE, 0.0, np.arange(DAY_STEPS, 2 * DAY_STEPS))
    again = NextStepTail.from_dict(model.to_dict())
    assert again.levels == model.levels
    assert np.array_equal(again.predict(x), model.predict(x))
    foreign = dict(model.to_dict(), features=["something", "else"])
    with pytest.raises(ValueError, match="other features"):
        NextStepTail.from_dict(foreign)
    damaged = dict(model.to_dict(), boosters=["not a model"] * len(model.levels))
    with pytest.raises(ValueError, match="cannot be read"):
        NextStepTail.from_dict(damaged)


def test_the_tail_learns_log_utilisation_and_reads_a_checkpoint_of_utilisation_itself(trained):
    model, data = trained
    x = features(data[0].values, SIZE, 0.0, np.arange(DAY_STEPS, 2 * DAY_STEPS))
    raw = np.stack([b.predict(x) for b in model.boosters], axis=1)
    assert model.log_offset == LOG_OFFSET
    assert np.allclose(model.predict(x), np.maximum.accumulate(np.maximum(np.exp(raw) - LOG_OFFSET, 0), axis=1))
    # A checkpoint from before the log scale has no log_offset: its boosters give utilisation.
    older = {k: v for k, v in model.to_dict().items() if k != "log_offset"}
    assert np.allclose(NextStepTail.from_dict(older).predict(x), np.maximum.accumulate(np.maximum(raw, 0), axis=1))
    with pytest.raises(ValueError, match="log offset must be positive"):
        NextStepTail(model.levels, model.boosters, log_offset=0.0)


def test_too_little_cpu_history_trains_nothing():
    short = [Series("h/vm/cpu_cores", "cpu_cores", np.ones(DAY_STEPS + 50), 0.0, SIZE, DAY_STEPS + 50)]
    unsized = [Series(s.key, s.metric, s.values, 0.0, None, s.train_end) for s in series(3)]
    memory = [Series(s.key.replace("cpu_cores", "memory_mib"), "memory_mib", s.values, 0.0, SIZE, s.train_end)
              for s in series(3)]
    for data in (short, unsized, memory):
        assert NextStepTail.fit(data, CONFIG) is None


def test_refine_learns_the_first_step_of_sized_cpu_forecasts_only(trained):
    model, data = trained
    levels = (0.1, 0.5, 0.9, 0.99, 0.995, 0.999)
    values = data[0].values[:3 * DAY_STEPS]
    flat = np.tile(np.linspace(0.5, 3.0, len(levels)), (4, 1))
    def forecast(metric: str, cold: bool = False) -> QuantileForecast:
        return QuantileForecast(f"h/vm/{metric}", metric, 0.0, 300.0, levels, flat.copy(), "m", cold_start=cold)
    histories = [SeriesHistory("h/vm/cpu_cores", "cpu_cores", 3 * DAY_STEPS * 300.0, values, SIZE),
                 SeriesHistory("h/vm/memory_mib", "memory_mib", 3 * DAY_STEPS * 300.0, values, 1024.0),
                 SeriesHistory("h/vm/cpu_cores", "cpu_cores", 3 * DAY_STEPS * 300.0, values, None),
                 SeriesHistory("h/vm/cpu_cores", "cpu_cores", 3 * DAY_STEPS * 300.0, values, SIZE)]
    given = [forecast("cpu_cores"), forecast("memory_mib"), forecast("cpu_cores"), forecast("cpu_cores", cold=True)]
    out = model.refine(histories, given)
    for f, before in zip(out[1:], given[1:]):
        assert f is before  # memory, a VM of unknown size and a cold start are left as they were
    refined, levels_out = out[0].values, out[0].quantiles
    assert levels_out == tuple(sorted(set(levels) | set(model.levels)))  # the learned levels join the forecast's
    # Later steps keep their tail, read at the added levels as the planner reads between quantiles.
    assert np.array_equal(refined[1:], at_levels(flat[1:], levels, levels_out))
    assert np.array_equal(at_levels(refined[1:], levels_out, levels), flat[1:])
    assert np.array_equal(refined[0, :2], flat[0, :2])  # the body stays the model's
    expected = model.predict(next_features(values, SIZE, histories[0].origin)[None])[0] * SIZE
    learned = [levels_out.index(q) for q in model.levels]
    assert np.allclose(refined[0, learned], np.maximum.accumulate(np.maximum(np.minimum(expected, SIZE), flat[0, 1])))
    assert np.all(np.diff(refined[0]) >= 0)


def test_memory_learns_on_memory_and_replaces_the_upper_levels_of_every_step():
    memory_config = replace(MEMORY, trees=30, min_exceedances=5)
    mib = 1024.0
    data = [Series(s.key.replace("cpu_cores", "memory_mib"), "memory_mib", s.values / SIZE * mib, 0.0, mib,
                   s.train_end) for s in series(6)]
    model = NextStepTail.fit(data, memory_config)
    assert model is not None and model.metric == "memory_mib" and model.steps == 0 and model.log_offset is None
    assert NextStepTail.fit(series(6), memory_config) is None  # CPU series only: nothing of memory to learn
    levels = (0.1, 0.5, 0.9, 0.99, 0.999)
    values = data[0].values[:3 * DAY_STEPS]
    flat = np.tile(np.linspace(100.0, 900.0, len(levels)), (4, 1))
    given = [QuantileForecast("h/vm/memory_mib", "memory_mib", 0.0, 300.0, levels, flat.copy(), "m"),
             QuantileForecast("h/vm/cpu_cores", "cpu_cores", 0.0, 300.0, levels, flat.copy(), "m")]
    histories = [SeriesHistory("h/vm/memory_mib", "memory_mib", 3 * DAY_STEPS * 300.0, values, mib),
                 SeriesHistory("h/vm/cpu_cores", "cpu_cores", 3 * DAY_STEPS * 300.0, values, SIZE)]
    out = model.refine(histories, given)
    assert out[1] is given[1]  # CPU is not memory's
    refined, levels_out = out[0].values, out[0].quantiles
    learned = [levels_out.index(q) for q in model.levels]
    expected = np.minimum(model.predict(next_features(values, mib, histories[0].origin)[None])[0] * mib,
                          tail_ceiling(values, mib, TailConfig()))
    for step in range(len(flat)):  # the next step's learned tail at every step of the horizon
        assert np.allclose(refined[step, learned], np.maximum.accumulate(np.maximum(expected, flat[step, 1])))
        assert np.array_equal(refined[step, :2], flat[step, :2])
    # A saved memory tail comes back as memory's; a checkpoint before memory was learned is CPU's first step.
    again = NextStepTail.from_dict(model.to_dict())
    assert (again.metric, again.steps) == ("memory_mib", 0)
    older = {k: v for k, v in model.to_dict().items() if k not in ("metric", "steps")}
    assert (NextStepTail.from_dict(older).metric, NextStepTail.from_dict(older).steps) == ("cpu_cores", 1)


def test_a_checkpoint_keeps_its_tails_and_one_from_before_memory_loads_as_cpus(trained, tmp_path):
    import torch

    from presculpt.coordinator.forecast.lstm.module import ModelConfig, QuantileLSTM
    from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster

    model, data = trained
    config = ModelConfig(hidden=8, head_hidden=16)
    network = QuantileLSTM(config)
    calibration = np.zeros((config.n_metrics, config.horizon, len(config.quantiles)))
    path = tmp_path / "model.pt"
    LstmForecaster(network, calibration, next_steps=[model]).save(path)
    x = features(data[0].values, SIZE, 0.0, np.arange(DAY_STEPS, DAY_STEPS + 50))
    (again,) = LstmForecaster.load(path).next_steps
    assert (again.metric, again.steps) == ("cpu_cores", 1) and np.array_equal(again.predict(x), model.predict(x))
    # A checkpoint of the version before: CPU's tail alone, under "next_step".
    older = torch.load(path, weights_only=False)
    older["next_step"] = {k: v for k, v in older.pop("next_steps")[0].items() if k not in ("metric", "steps")}
    torch.save(older, path)
    (legacy,) = LstmForecaster.load(path).next_steps
    assert (legacy.metric, legacy.steps) == ("cpu_cores", 1) and np.array_equal(legacy.predict(x), model.predict(x))
    LstmForecaster(network, calibration).save(path)
    assert LstmForecaster.load(path).next_steps == ()
