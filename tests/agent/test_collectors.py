"""Collectors: rates from cumulative counters."""

from __future__ import annotations

import pytest

from presculpt.agent.collectors import GuestCollector, HostCollector
from presculpt.agent.hypervisor.fake import FakeHypervisor


class Clock:
    def __init__(self):
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def test_cpu_cores_from_cpu_time_deltas():
    clock = Clock()
    hv = FakeHypervisor(monotonic_ns=clock, clock=lambda: 1000.0)
    hv.add_domain("busy", vcpus=2, used_mib=400, memory_mib=1024)
    hv.add_domain("idle")
    hv.add_domain("off", state="shutoff")
    hv.set_guest_usage("busy", cpu_cores=1.5)
    hv.connect()
    collector = GuestCollector(hv, wall_clock=lambda: 1000.0)
    assert collector.sample() == []  # the first read only primes
    hv.advance_cpu(5.0)
    clock.ns += 5_000_000_000
    samples = {s.name: s for s in collector.sample({})}
    assert set(samples) == {"busy", "idle"}
    busy = samples["busy"]
    assert busy.cpu_cores == pytest.approx(1.5)
    assert busy.interval_s == pytest.approx(5.0)
    assert busy.memory_used_mib == pytest.approx(400)
    assert samples["idle"].cpu_cores == 0


def test_counter_reset_is_not_negative_usage():
    clock = Clock()
    hv = FakeHypervisor(monotonic_ns=clock)
    hv.add_domain("vm")
    hv.set_guest_usage("vm", cpu_cores=1.0)
    hv.connect()
    collector = GuestCollector(hv)
    hv.advance_cpu(10)
    clock.ns += 10**9
    collector.sample()
    hv._domains["vm"].cpu_time_ns = 0  # the guest restarted
    clock.ns += 10**9
    (sample,) = collector.sample()
    assert sample.cpu_cores == 0


def test_host_sample_is_plausible():
    host = HostCollector().sample()
    assert host.cpu_count >= 1
    assert 0 <= host.cpu_used_cores <= host.cpu_count
    assert 0 < host.memory_used_mib < host.memory_total_mib
