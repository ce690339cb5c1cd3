"""The planner's configuration rejects nonsense at construction."""

from __future__ import annotations

import pytest

from presculpt.coordinator.planner import CostModel, PlannerConfig, TierPolicy
from presculpt.coordinator.planner.model import DEFAULT_TIERS


@pytest.mark.parametrize("kwargs", [
    {"quantile": 1.2}, {"quantile": 1.0}, {"quantile": 0.3}, {"margin": -0.1}, {"deadband": -0.01},
    {"grow_headroom": -1.0}, {"max_step_down": 0.0}, {"max_step_down": 1.5}, {"hold_steps": -1},
    {"lead_steps": -1}, {"cooldown_steps": -3}, {"violation_penalty": -2.0},
])
def test_tier_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        TierPolicy("t", **kwargs)


def test_tier_policy_accepts_the_edges():
    TierPolicy("t", quantile=0.5, margin=0.0, deadband=0.0, max_step_down=1.0, hold_steps=0)
    assert TierPolicy("t", quantile=0.99).penalty == pytest.approx(99.0)
    assert TierPolicy("t", violation_penalty=3.0).penalty == 3.0


@pytest.mark.parametrize("kwargs", [
    {"mode": "auto"}, {"mode": "ENFORCE"}, {"default_tier": "platinum"},
    {"tiers": {"gold": DEFAULT_TIERS["gold"]}},  # the default default_tier, silver, is gone
    {"step_s": 0.0}, {"memory_margin_fraction": -0.1}, {"memory_margin_mib": -1.0},
])
def test_planner_config_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        PlannerConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"price_vcpu_hour": -1.0}, {"price_gib_hour": -0.1}, {"resize_cost": -0.002}])
def test_cost_model_rejects_negative_prices(kwargs):
    with pytest.raises(ValueError):
        CostModel(**kwargs)


def test_valid_configs_and_the_tier_fallback():
    config = PlannerConfig(mode="enforce", tiers={"gold": DEFAULT_TIERS["gold"]}, default_tier="gold")
    assert config.tier("gold") is DEFAULT_TIERS["gold"]
    assert config.tier("unknown") is DEFAULT_TIERS["gold"]
    assert PlannerConfig().tier("") is DEFAULT_TIERS["silver"]
