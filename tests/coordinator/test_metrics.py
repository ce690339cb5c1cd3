"""The coordinator's per-VM series (allocation and forecast band) and the snapshot gauge under them:
each update replaces a part whole, so removed VMs lose their series."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from presculpt.coordinator.metrics import CoordinatorMetrics
from presculpt.coordinator.model import VmRecord
from presculpt.metrics import SnapshotGauge


def vm(host: str, name: str, vcpus: int = 2, quota: float | None = None, memory_mib: int = 2048) -> VmRecord:
    return VmRecord(host, f"u-{name}", name, "running", vcpus, 4, quota, memory_mib, 4096)


def test_snapshot_gauge_replaces_a_part_whole():
    registry = CollectorRegistry()
    gauge = SnapshotGauge("demo_value", "A demo", ("host", "vm"), registry)
    gauge.replace({("h1", "a"): 1, ("h1", "b"): 2}, part="h1")
    gauge.replace({("h2", "c"): 3}, part="h2")
    gauge.replace({("h1", "a"): 5}, part="h1")
    assert registry.get_sample_value("demo_value", {"host": "h1", "vm": "a"}) == 5
    assert registry.get_sample_value("demo_value", {"host": "h1", "vm": "b"}) is None
    assert gauge.value("h2", "c") == 3
    gauge.replace({}, part="h2")
    assert gauge.value("h2", "c") is None
    text = generate_latest(registry).decode()
    assert "# TYPE demo_value gauge" in text and 'demo_value{host="h1",vm="a"} 5.0' in text
    with pytest.raises(ValueError, match="do not match"):
        gauge.replace({("h1",): 1})


def test_allocation_follows_each_hosts_inventory():
    m = CoordinatorMetrics()
    m.observe_inventory("h1", [vm("h1", "web-1"), vm("h1", "web-2", quota=1.5, memory_mib=1024)])
    m.observe_inventory("h2", [vm("h2", "db-1")])
    assert m.vm_allocation.value("h1", "web-1", "cpu_cores") == 2
    assert m.vm_allocation.value("h1", "web-2", "cpu_cores") == 1.5  # the quota, when one is set
    assert m.vm_allocation.value("h1", "web-2", "memory_mib") == 1024
    m.observe_inventory("h1", [vm("h1", "web-1", vcpus=3)])  # web-2 is gone
    assert m.vm_allocation.value("h1", "web-1", "cpu_cores") == 3
    assert m.vm_allocation.value("h1", "web-2", "cpu_cores") is None
    assert m.vm_allocation.value("h2", "db-1", "memory_mib") == 2048  # other hosts untouched


def test_forecast_band_is_the_last_runs():
    m = CoordinatorMetrics()
    levels = (0.1, 0.5, 0.9, 0.99)
    m.observe_forecasts([(vm("h1", "web-1"), "cpu_cores", levels, (0.5, 1.0, 1.5, 2.0)),
                         (vm("h1", "web-2"), "memory_mib", levels, (100, 200, 300, 400))])
    registry = m.registry
    assert registry.get_sample_value("presculpt_vm_forecast", {"host": "h1", "vm": "web-1", "metric": "cpu_cores",
                                                               "quantile": "0.9"}) == 1.5
    assert m.vm_forecast.value("h1", "web-2", "memory_mib", "0.99") == 400
    m.observe_forecasts([(vm("h1", "web-1"), "cpu_cores", levels, (0.4, 0.8, 1.2, 1.6))])
    assert m.vm_forecast.value("h1", "web-1", "cpu_cores", "0.1") == 0.4
    assert m.vm_forecast.value("h1", "web-2", "memory_mib", "0.99") is None
