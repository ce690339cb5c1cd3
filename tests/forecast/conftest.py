"""Fixtures of the forecaster tests: synthetic series, tiny traces, tiny model and training sizes.

Everything here is small on purpose (a network of 8 hidden units, two short epochs, a few days of
a few VMs) so the whole folder runs in seconds; the shapes and rules tested do not depend on size.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from presculpt.coordinator.forecast.base import DAY_STEPS, STEP_S
from presculpt.coordinator.forecast.lstm.module import ModelConfig
from presculpt.coordinator.forecast.lstm.training import TrainConfig

TRACE_START_TS = 1_700_006_400  # midnight UTC, on the 300 s grid


@pytest.fixture
def tiny_model() -> ModelConfig:
    return ModelConfig(hidden=8, head_hidden=16)


@pytest.fixture
def tiny_training() -> TrainConfig:
    return TrainConfig(epochs=2, samples_per_epoch=2000, threads=1)


def daily_series(days: float, seed: int = 0, level: float = 1.0, depth: float = 0.5, noise: float = 0.05
                 ) -> np.ndarray:
    """A daily sine around ``level`` with Gaussian noise, never negative: ``days`` of 5-minute steps."""
    rng = np.random.default_rng(seed)
    steps = int(round(days * DAY_STEPS))
    t = np.arange(steps)
    phase = rng.uniform(0, 2 * np.pi)
    values = level * (1 + depth * np.sin(2 * np.pi * t / DAY_STEPS + phase)) + rng.normal(0, noise * level, steps)
    return np.maximum(values, 0.0)


@pytest.fixture
def make_series() -> Callable[..., np.ndarray]:
    return daily_series


def write_trace(folder: Path, vms: int = 4, days: float = 4.0, memory: bool = True, seed: int = 0) -> Path:
    """A trace in the canonical format (traces/FORMAT.md): CPU in cores of 2- and 4-vCPU VMs and,
    with ``memory``, memory in MiB of 2 and 4 GiB VMs, daily patterns with noise."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = [(f"vm-{i}", 2 + 2 * (i % 2), 2048 * (1 + i % 2)) for i in range(vms)]
    with open(folder / "vms.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["vm_id", "max_vcpus", "max_mem_mib"])
        for vm_id, vcpus, mem in shapes:
            writer.writerow([vm_id, vcpus, mem if memory else ""])
    with gzip.open(folder / "usage.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["vm_id", "ts", "cpu_cores", "mem_mib"])
        for i, (vm_id, vcpus, mem) in enumerate(shapes):
            cpu = daily_series(days, seed=seed + i, level=0.3 * vcpus)
            used = daily_series(days, seed=seed + 100 + i, level=0.5 * mem, depth=0.1, noise=0.01)
            for k, (c, m) in enumerate(zip(cpu, used)):
                writer.writerow([vm_id, int(TRACE_START_TS + k * STEP_S), f"{c:.4f}", f"{m:.1f}" if memory else ""])
    return folder


@pytest.fixture
def tiny_trace(tmp_path: Path) -> Path:
    """4 VMs, 4 days (3 to train on, 1 to test), CPU and memory."""
    return write_trace(tmp_path / "tiny-trace")


@pytest.fixture
def make_trace(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "trace", **kwargs) -> Path:
        return write_trace(tmp_path / name, **kwargs)

    return make
