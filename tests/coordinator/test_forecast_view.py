"""What operators see of a VM's forecasts lines up with the levels the view names, whatever levels
each stored forecast has (CPU's carry the learned next step's, memory's fewer, a new VM's fewer)."""

from __future__ import annotations

import pytest

from presculpt.coordinator.forecast_view import forecast_view
from presculpt.coordinator.model import ForecastRecord, HostRecord, VmRecord

from .test_forecast_service import make_store

STEP = 300.0
T = 19675 * 86400.0
VM = VmRecord(host="h1", uuid="u-1", name="web-1", state="running", vcpus=2, max_vcpus=4, cpu_quota_cores=None,
              memory_mib=4096, max_memory_mib=8192, metadata={})
CPU_LEVELS = (0.1, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
MEMORY_LEVELS = (0.1, 0.5, 0.9, 0.99)


def record(metric: str, origin: float, levels: tuple[float, ...], cold: bool = False) -> ForecastRecord:
    # Each value names its level and step: 100 x level + step, so a misaligned column shows.
    values = tuple(tuple(100 * q + h for q in levels) for h in range(3))
    return ForecastRecord("h1", "u-1", metric, origin, STEP, "m", cold, levels, values)


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path / "m.db")
    s.upsert_inventory(HostRecord("h1", "h1", "x", 16, 65536), [VM])
    yield s
    s.stop()


def test_every_row_is_at_the_levels_the_view_names(store):
    store.store_forecasts([record("cpu_cores", T - 2 * STEP, (0.1, 0.5, 0.9, 0.99), cold=True),
                           record("cpu_cores", T - STEP, CPU_LEVELS),
                           record("memory_mib", T - STEP, MEMORY_LEVELS)])
    view = forecast_view(store, VM, T, 3600.0, 1)
    assert view.quantiles == (0.1, 0.5, 0.9, 0.99)  # the levels all of them have
    for point in view.past:
        assert tuple(point.values) == tuple(100 * q for q in view.quantiles)
    for metric, latest in view.latest.items():
        assert latest.quantiles == view.quantiles
        assert tuple(map(tuple, latest.values)) == tuple(tuple(100 * q + h for q in view.quantiles) for h in range(3))
    assert {p.metric for p in view.past} == {"cpu_cores", "memory_mib"}


def test_a_view_of_forecasts_at_the_same_levels_keeps_them_all(store):
    store.store_forecasts([record("cpu_cores", T - 2 * STEP, CPU_LEVELS), record("cpu_cores", T - STEP, CPU_LEVELS)])
    view = forecast_view(store, VM, T, 3600.0, 1)
    assert view.quantiles == CPU_LEVELS
    assert tuple(view.latest["cpu_cores"].values[1]) == tuple(100 * q + 1 for q in CPU_LEVELS)
