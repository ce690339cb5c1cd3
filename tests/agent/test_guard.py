"""The safety guard alone, on frozen snapshots."""

from __future__ import annotations

import dataclasses

import pytest

from presculpt.agent.config import GuardConfig
from presculpt.agent.guard import GuardRefused, ResolvedShape, SafetyGuard, resolve
from presculpt.agent.model import BalloonStats, DomainInfo, HostInfo, TargetShape

NOW = 1_700_000_000.0
HOST = HostInfo("h", "test:///", cpus=4, memory_mib=8192, hypervisor="X", libvirt_version="9")


def domain(name="vm", vcpus=2, max_vcpus=4, quota=None, memory=2048, max_memory=4096, used=500.0,
           age_s=1.0, state="running", domain_type="kvm") -> DomainInfo:
    balloon = BalloonStats(
        actual_mib=memory, unused_mib=memory - used, available_mib=memory,
        usable_mib=memory - used, last_update=int(NOW - age_s),
    )
    return DomainInfo(name, f"uuid-{name}", state, vcpus, max_vcpus, memory, max_memory, quota, balloon,
                      domain_type=domain_type)


def check(target: TargetShape, dom: DomainInfo | None = None, others=(), config=GuardConfig()) -> ResolvedShape:
    return SafetyGuard(config).check(dom or domain(), target, HOST, list(others), NOW)


def test_cpu_cores_pick_vcpus_and_quota():
    assert resolve(domain(), TargetShape(cpu_cores=1.5)) == ResolvedShape(2, 1.5, 2048)
    assert resolve(domain(), TargetShape(cpu_cores=3)) == ResolvedShape(3, None, 2048)
    assert resolve(domain(), TargetShape(vcpus=4, cpu_cores=1.5)) == ResolvedShape(4, 1.5, 2048)
    assert resolve(domain(quota=1.5), TargetShape(vcpus=3)) == ResolvedShape(3, None, 2048)
    assert resolve(domain(quota=1.5), TargetShape(memory_mib=1024)) == ResolvedShape(2, 1.5, 1024)


def test_cores_that_do_not_fit_the_vcpus_are_refused():
    with pytest.raises(GuardRefused, match="do not fit in 1 vCPUs"):
        check(TargetShape(vcpus=1, cpu_cores=1.5))


@pytest.mark.parametrize(
    "target, message",
    [
        (TargetShape(vcpus=5), "exceeds the maximum of 4"),
        (TargetShape(memory_mib=5000), "exceeds the maximum of 4096 MiB"),
        (TargetShape(cpu_cores=0.05), "below the floor of 0.1"),
        (TargetShape(memory_mib=128), "below the floor of 256 MiB"),
        (TargetShape(), "nothing to change"),
    ],
)
def test_limits(target, message):
    with pytest.raises(GuardRefused, match=message):
        check(target)


def test_vcpu_floor():
    with pytest.raises(GuardRefused, match="below the floor of 2"):
        check(TargetShape(vcpus=1), config=GuardConfig(min_vcpus=2, min_cpu_cores=0.5))


def test_memory_never_below_use_plus_margin():
    # 1500 MiB used: floor is 1500 + max(128, 15% of 1500 = 225) = 1725 MiB.
    dom = domain(used=1500)
    assert check(TargetShape(memory_mib=1725), dom).memory_mib == 1725
    with pytest.raises(GuardRefused, match="safe floor of 1725 MiB"):
        check(TargetShape(memory_mib=1724), dom)


def test_memory_shrink_per_step_is_bounded():
    with pytest.raises(GuardRefused, match="exceeds the limit of 25% per step"):
        check(TargetShape(memory_mib=1024), config=GuardConfig(max_memory_shrink_fraction=0.25))
    assert check(TargetShape(memory_mib=1536), config=GuardConfig(max_memory_shrink_fraction=0.25)).memory_mib == 1536


def test_shrink_needs_fresh_balloon_statistics():
    with pytest.raises(GuardRefused, match="120 s old"):
        check(TargetShape(memory_mib=1800), domain(age_s=120))
    silent = dataclasses.replace(domain(), balloon=BalloonStats(actual_mib=2048))
    with pytest.raises(GuardRefused, match="no balloon statistics"):
        check(TargetShape(memory_mib=1800), silent)
    # Growing needs no statistics.
    assert check(TargetShape(memory_mib=3000), silent).memory_mib == 3000


def test_host_cpu_capacity_at_overcommit():
    others = [domain(f"o{i}", vcpus=4) for i in range(3)]  # 12 vCPUs; capacity 4 x 4 = 16
    assert check(TargetShape(vcpus=4), others=others).vcpus == 4
    crowded = others + [domain("o9", vcpus=1)]
    with pytest.raises(GuardRefused, match="17 vCPUs .* capacity of 16"):
        check(TargetShape(vcpus=4), others=crowded)
    # Shrinking is always allowed, however crowded the host.
    assert check(TargetShape(vcpus=1), others=crowded * 3).vcpus == 1


def test_host_memory_capacity():
    # Capacity (8192 - 1024 reserved) x 1.0 = 7168 MiB; others hold 4096.
    others = [domain("o1", memory=4096, max_memory=4096)]
    assert check(TargetShape(memory_mib=3072), others=others).memory_mib == 3072
    with pytest.raises(GuardRefused, match="exceed its capacity of 7168 MiB"):
        check(TargetShape(memory_mib=3100), others=others)


def test_stopped_domains_do_not_count_and_cannot_be_resized():
    others = [domain("o1", memory=6000, max_memory=8000, state="shutoff")]
    assert check(TargetShape(memory_mib=4096), others=others).memory_mib == 4096
    with pytest.raises(GuardRefused, match="shutoff"):
        check(TargetShape(vcpus=2), domain(state="shutoff"))


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError):
        GuardConfig(max_memory_shrink_fraction=0)
    with pytest.raises(ValueError):
        GuardConfig(min_vcpus=0)


def test_tcg_guests_lower_cpu_through_the_quota_not_unplug():
    tcg = domain(vcpus=3, domain_type="qemu")
    assert resolve(tcg, TargetShape(cpu_cores=1.5)) == ResolvedShape(3, 1.5, 2048)
    assert resolve(tcg, TargetShape(cpu_cores=3)) == ResolvedShape(3, None, 2048)
    assert resolve(tcg, TargetShape(cpu_cores=4)) == ResolvedShape(4, None, 2048)  # hot-plug is fine
    with pytest.raises(GuardRefused, match="software emulation .* lower --cpu-cores instead"):
        resolve(tcg, TargetShape(vcpus=2))
    with pytest.raises(GuardRefused, match="software emulation"):
        resolve(tcg, TargetShape(vcpus=1, cpu_cores=0.5))
    assert resolve(domain(vcpus=3), TargetShape(vcpus=2)) == ResolvedShape(2, None, 2048)
