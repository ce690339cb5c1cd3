"""Backoff, local safety and the command applier: pure parts of the agent's link to the coordinator."""

from __future__ import annotations

import math

from presculpt.agent.commands import CommandApplier
from presculpt.agent.config import GuardConfig
from presculpt.agent.guard import SafetyGuard
from presculpt.agent.hypervisor.fake import FakeHypervisor
from presculpt.agent.resize import Resizer
from presculpt.agent.safety import safety_actions
from presculpt.agent.stream import Backoff
from presculpt.v1 import model_pb2

from ..conftest import make_fake

Status = model_pb2.CommandOutcome.Status


def test_backoff_grows_caps_and_jitters():
    low = Backoff(0.5, 4.0, jitter=0.5, rng=lambda: 1.0)
    assert [low.next() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    high = Backoff(0.5, 4.0, jitter=0.5, rng=lambda: 0.0)
    assert [high.next() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    high.reset()
    assert high.next() == 0.5


def guarded(hv: FakeHypervisor, now: float = 1000.0) -> tuple[Resizer, CommandApplier]:
    resizer = Resizer(hv, SafetyGuard(GuardConfig()), clock=lambda: now)
    return resizer, CommandApplier(resizer, clock=lambda: now)


def resize(cid: str, vm: str, deadline: float = 2000.0, kind: str = "resize", **target) -> model_pb2.Command:
    cmd = model_pb2.Command(id=cid, deadline=deadline)
    getattr(cmd, kind).vm = vm
    getattr(cmd, kind).target.CopyFrom(model_pb2.Shape(**target))
    return cmd


def test_applier_applies_once_and_replays_the_outcome():
    hv = make_fake()
    hv.connect()
    _, applier = guarded(hv)
    first = applier.apply(resize("c1", "guest-a", vcpus=3))
    assert first.status == Status.APPLIED and first.command_id == "c1" and first.vm.vcpus == 3
    hv.set_vcpus("guest-a", 1)  # changed behind the agent's back
    assert applier.apply(resize("c1", "guest-a", vcpus=3)) is first  # a resend is not re-applied
    assert hv.domain_info("guest-a").vcpus == 1
    assert applier.apply(resize("c2", "guest-a", vcpus=1)).status == Status.UNCHANGED


def test_applier_refuses_expired_unknown_and_unsafe_commands():
    hv = make_fake()
    hv.connect()
    _, applier = guarded(hv)
    assert applier.apply(resize("c1", "guest-a", deadline=999.0, vcpus=2)).status == Status.EXPIRED
    assert hv.domain_info("guest-a").vcpus == 1
    missing = applier.apply(resize("c2", "nope", vcpus=2))
    assert missing.status == Status.REFUSED and "nope" in missing.message
    refused = applier.apply(resize("c3", "guest-a", vcpus=9))
    assert refused.status == Status.REFUSED and "exceeds the maximum" in refused.message
    assert applier.apply(model_pb2.Command(id="c4", deadline=2000)).status == Status.REFUSED


def test_downgrade_steps_within_the_guard():
    hv = FakeHypervisor(clock=lambda: 1000.0)
    hv.add_domain("big", memory_mib=2048, max_memory_mib=4096, used_mib=200)
    hv.connect()
    _, applier = guarded(hv)
    first = applier.apply(resize("d1", "big", kind="downgrade", memory_mib=512))
    assert first.status == Status.APPLIED and "stepped to 1024 MiB" in first.message
    assert hv.domain_info("big").memory_mib == 1024  # halved at most per step
    second = applier.apply(resize("d2", "big", kind="downgrade", memory_mib=512))
    assert hv.domain_info("big").memory_mib == 512 and second.status == Status.APPLIED


def test_local_safety_grows_guests_below_their_floor_only():
    hv = FakeHypervisor(clock=lambda: 1000.0)
    hv.add_domain("starved", memory_mib=600, max_memory_mib=2048, used_mib=550)
    hv.add_domain("roomy", memory_mib=2048, max_memory_mib=2048, used_mib=300)
    hv.add_domain("capped", memory_mib=600, max_memory_mib=640, used_mib=590)
    hv.connect()
    guard = SafetyGuard(GuardConfig())
    actions = {a.domain: a for a in safety_actions(hv.list_domains(), guard, now=1000.0)}
    assert set(actions) == {"starved", "capped"}
    floor = math.ceil(550 + max(128, 550 * 0.15))
    assert actions["starved"].target.memory_mib == floor
    assert actions["capped"].target.memory_mib == 640  # never past the maximum
