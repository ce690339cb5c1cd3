"""The resizer over the fake hypervisor: order of steps, idempotence, refusals change nothing."""

from __future__ import annotations

import pytest

from presculpt.agent.config import GuardConfig
from presculpt.agent.guard import GuardRefused, ResolvedShape, SafetyGuard
from presculpt.agent.hypervisor.fake import FakeHypervisor
from presculpt.agent.model import TargetShape
from presculpt.agent.resize import ResizeFailed, Resizer


@pytest.fixture
def hv() -> FakeHypervisor:
    hv = FakeHypervisor(cpus=4, memory_mib=8192, clock=lambda: 1000.0)
    hv.add_domain("vm", vcpus=1, max_vcpus=4, memory_mib=1024, max_memory_mib=2048, used_mib=300)
    hv.connect()
    return hv


def resizer(hv) -> Resizer:
    return Resizer(hv, SafetyGuard(GuardConfig()), clock=lambda: 1000.0)


def test_fractional_cpu_sets_vcpus_then_quota(hv):
    result = resizer(hv).apply("vm", TargetShape(cpu_cores=1.5))
    assert hv.calls == [("set_vcpus", "vm", "2"), ("set_cpu_quota", "vm", "1.5")]
    assert result.before == ResolvedShape(1, None, 1024)
    assert result.after == ResolvedShape(2, 1.5, 1024)


def test_same_target_twice_is_harmless(hv):
    r = resizer(hv)
    r.apply("vm", TargetShape(vcpus=3, memory_mib=1500))
    calls = list(hv.calls)
    again = r.apply("vm", TargetShape(vcpus=3, memory_mib=1500))
    assert not again.changed
    assert hv.calls == calls


def test_quota_is_recomputed_when_vcpus_change(hv):
    r = resizer(hv)
    r.apply("vm", TargetShape(cpu_cores=1.5))
    hv.calls.clear()
    r.apply("vm", TargetShape(vcpus=4, cpu_cores=1.5))
    assert hv.calls == [("set_vcpus", "vm", "4"), ("set_cpu_quota", "vm", "1.5")]


def test_whole_cores_remove_the_quota(hv):
    r = resizer(hv)
    r.apply("vm", TargetShape(cpu_cores=1.5))
    result = r.apply("vm", TargetShape(cpu_cores=2))
    assert result.after == ResolvedShape(2, None, 1024)


def test_refusal_changes_nothing(hv):
    with pytest.raises(GuardRefused):
        resizer(hv).apply("vm", TargetShape(vcpus=3, memory_mib=4096))
    assert hv.calls == []
    assert hv.domain_info("vm").vcpus == 1


def test_failure_part_way_says_what_was_done(hv, monkeypatch):
    def broken(name, mib):
        from presculpt.agent.hypervisor.base import OperationFailed

        raise OperationFailed("balloon stuck")

    monkeypatch.setattr(hv, "set_memory", broken)
    with pytest.raises(ResizeFailed, match="already applied: vcpus 1->2") as err:
        resizer(hv).apply("vm", TargetShape(vcpus=2, memory_mib=1500))
    assert err.value.steps_done == ("vcpus 1->2",)
