"""The model registry: versioned checkpoints, promotion only when better, restart, pruning, import."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from presculpt.coordinator.forecast.base import SeriesHistory
from presculpt.coordinator.forecast.lstm.module import ModelConfig, QuantileLSTM
from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster
from presculpt.coordinator.forecast.registry import (
    CURRENT_FILE,
    KEPT_ASIDE,
    RETIRED,
    ModelRegistry,
    RegistryError,
    compare,
)


def tiny_model(seed: int) -> LstmForecaster:
    torch.manual_seed(seed)
    return LstmForecaster(QuantileLSTM(ModelConfig(hidden=8, head_hidden=16)), np.zeros((2, 12, 4)))


def scores(cpu: float, memory: float | None = None) -> dict:
    out = {"cpu_cores": {"pinball": cpu, "coverage_p90": 0.9}}
    if memory is not None:
        out["memory_mib"] = {"pinball": memory}
    return out


def forecast_of(model: LstmForecaster) -> np.ndarray:
    t = np.arange(400)
    history = SeriesHistory("h/u/cpu_cores", "cpu_cores", 400 * 300.0, 1 + np.sin(t / 20), capacity=4.0)
    return model.predict([history])[0].values


def test_the_first_model_is_promoted_and_a_restart_loads_it(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    assert registry.current() is None and registry.load_current() is None
    model = tiny_model(1)
    promotion = registry.promote_if_better(model, scores(0.5, 40.0), None, {"series": 3})
    assert promotion.promoted and promotion.reason == "no current model"
    version = promotion.version
    assert version.path.name == f"{version.version}.pt" and version.version.startswith("lstm-")
    assert model.name == version.version  # its forecasts carry the version

    restarted = ModelRegistry(tmp_path / "models")
    loaded_version, loaded = restarted.load_current()
    assert loaded_version.version == version.version and loaded.name == version.version
    np.testing.assert_allclose(forecast_of(loaded), forecast_of(model))
    sidecar = json.loads(version.path.with_suffix(".json").read_text())
    assert sidecar["status"] == "current" and sidecar["training"] == {"series": 3}
    assert sidecar["scores"]["candidate"]["cpu_cores"]["pinball"] == 0.5
    assert not list((tmp_path / "models").glob("*.tmp"))


def test_a_worse_candidate_is_kept_aside_and_current_is_unchanged(tmp_path, caplog):
    registry = ModelRegistry(tmp_path)
    first = registry.promote_if_better(tiny_model(1), scores(0.5, 40.0), None).version
    with caplog.at_level(logging.WARNING, logger="presculpt.coordinator.forecast.registry"):
        worse = registry.promote_if_better(tiny_model(2), scores(0.6, 41.0), scores(0.5, 40.0), parent=first.version)
    assert not worse.promoted and worse.change == pytest.approx((0.2 + 0.025) / 2)
    assert registry.current().version == first.version
    assert registry.load_current()[1].name == first.version
    assert json.loads(worse.version.path.with_suffix(".json").read_text())["status"] == KEPT_ASIDE
    assert json.loads(worse.version.path.with_suffix(".json").read_text())["parent"] == first.version
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{worse.version.version} kept aside, {first.version} stays current" in line
    assert "cpu_cores 0.6" in line and "cpu_cores 0.5" in line and "memory_mib 41" in line


def test_a_better_candidate_is_promoted_and_the_old_one_retired(tmp_path):
    registry = ModelRegistry(tmp_path)
    first = registry.promote_if_better(tiny_model(1), scores(0.5), None).version
    better = registry.promote_if_better(tiny_model(2), scores(0.4), scores(0.5))
    assert better.promoted and better.change == pytest.approx(-0.2)
    assert registry.current().version == better.version.version
    statuses = {v.version: v.status for v in registry.versions()}
    assert statuses == {first.version: RETIRED, better.version.version: "current"}
    assert json.loads((tmp_path / CURRENT_FILE).read_text())["version"] == better.version.version


def test_the_promotion_rule_is_the_mean_relative_change_of_pinball():
    # CPU 10% better, memory 4% worse: the mean change is -3%, promoted.
    assert compare(scores(0.9, 10.4), scores(1.0, 10.0))[0]
    # CPU 5% better, memory 20% worse: +7.5%, kept aside.
    better, change, reason = compare(scores(0.95, 12.0), scores(1.0, 10.0))
    assert not better and change == pytest.approx(0.075) and "7.5% higher" in reason
    # Memory scored for one model only: CPU alone decides.
    assert compare(scores(0.9, 99.0), scores(1.0))[0]
    assert not compare(scores(1.0), scores(1.0))[0]  # equal is not better
    assert compare({}, scores(1.0)) == (False, None, "no metric was scored for both models")
    assert compare(scores(5.0), None)[0]  # nothing to beat


def test_old_versions_are_pruned_beyond_the_configured_count(tmp_path):
    registry = ModelRegistry(tmp_path, keep_versions=2)
    first = registry.promote_if_better(tiny_model(0), scores(1.0), None).version
    aside = [registry.promote_if_better(tiny_model(i), scores(2.0), scores(1.0)).version.version for i in range(4)]
    assert [v.version for v in registry.versions()] == [first.version, *aside[-2:]]
    # Promotions retire the old current; retired versions are pruned the same way.
    promoted = [registry.promote_if_better(tiny_model(9), scores(1.0 - i / 10), scores(1.0 - (i - 1) / 10))
                .version.version for i in range(1, 5)]
    kinds = {}
    for v in registry.versions():
        kinds.setdefault(v.status, []).append(v.version)
    assert kinds == {KEPT_ASIDE: aside[-2:], RETIRED: promoted[1:3], "current": [promoted[3]]}
    assert len(list(tmp_path.glob("*.json"))) == len(registry.versions()) + 1  # sidecars, and current.json


def test_import_seeds_an_empty_registry_only(tmp_path):
    seed = tmp_path / "seed.pt"
    model = tiny_model(3)
    model.save(seed)
    registry = ModelRegistry(tmp_path / "models")
    version = registry.import_checkpoint(seed)
    assert registry.current().version == version.version
    assert version.info["source"] == "imported" and version.info["imported_from"] == str(seed.resolve())
    np.testing.assert_allclose(forecast_of(registry.load_current()[1]), forecast_of(model))
    with pytest.raises(RegistryError, match="already has a current model"):
        registry.import_checkpoint(seed)


def test_unusable_checkpoints_fail_with_one_line(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(RegistryError, match="does not exist"):
        registry.import_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(RegistryError, match="cannot load model checkpoint") as err:
        registry.import_checkpoint(junk)
    assert "\n" not in str(err.value)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / CURRENT_FILE).write_text('{"version": "lstm-20250101T000000Z-7"}')
    with pytest.raises(RegistryError, match="names version 'lstm-20250101T000000Z-7', which has no checkpoint"):
        registry.current()


def test_a_broken_pointer_is_replaced_by_the_next_candidate(tmp_path, caplog):
    registry = ModelRegistry(tmp_path)
    (tmp_path / CURRENT_FILE).write_text('{"version": "lstm-20250101T000000Z-7"}')
    with caplog.at_level(logging.WARNING):
        promotion = registry.promote_if_better(tiny_model(1), scores(0.5), scores(0.1))
    assert promotion.promoted and registry.current().version == promotion.version.version
    assert "judged as if there were no current model" in caplog.text
