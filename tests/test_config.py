"""Typed configuration: the sample file is valid and equals the defaults; mistakes are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from presculpt.agent.config import AgentConfig, load_agent_config
from presculpt.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_sample_config_is_the_defaults():
    assert load_agent_config(ROOT / "config" / "agent.sample.toml") == AgentConfig()


def test_no_file_means_defaults():
    assert load_agent_config(None) == AgentConfig()


@pytest.mark.parametrize(
    "text, message",
    [
        ("intervall_s = 5", "unknown key 'intervall_s'"),
        ("interval_s = 'fast'", "interval_s: expected a number"),
        ("[guard]\nmin_vcpus = 1.5", "guard: min_vcpus: expected a whole number"),
        ("[guard]\nmax_memory_shrink_fraction = 2", "must be in \\(0, 1\\]"),
        ("[shadow]\nwarm_state = 'frozen'", "expected one of 'paused', 'saved', 'defined'"),
        ("interval_s = ", "cannot read config file"),
        ("interval_s = 0", "interval_s must be positive"),
    ],
)
def test_mistakes_are_one_clear_line(tmp_path, text, message):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_agent_config(path)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_agent_config(tmp_path / "nope.toml")


def test_coordinator_sample_config_is_the_defaults():
    from presculpt.coordinator.config import CoordinatorConfig, load_coordinator_config

    assert load_coordinator_config(ROOT / "config" / "coordinator.sample.toml") == CoordinatorConfig()
