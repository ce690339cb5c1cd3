"""Conversions to protobuf shared by the agent and the coordinator (both sides of the wire)."""

from __future__ import annotations

from typing import Protocol

from presculpt.v1 import model_pb2


class SampleLike(Protocol):
    """What both the agent's VmSample and the store's SampleRow carry."""

    uuid: str
    ts: float
    interval_s: float
    cpu_cores: float
    vcpus: int
    cpu_quota_cores: float | None
    memory_mib: int
    memory_used_mib: float | None
    memory_available_mib: float | None
    disk_read_bps: float
    disk_write_bps: float
    net_rx_bps: float
    net_tx_bps: float


def vm_sample_pb(s: SampleLike) -> model_pb2.VmSample:
    """One VM sample as a message; unknown (None) figures stay unset."""
    msg = model_pb2.VmSample(
        uuid=s.uuid, ts=s.ts, interval_s=s.interval_s, cpu_cores=s.cpu_cores, vcpus=s.vcpus,
        memory_mib=s.memory_mib, disk_read_bps=s.disk_read_bps, disk_write_bps=s.disk_write_bps,
        net_rx_bps=s.net_rx_bps, net_tx_bps=s.net_tx_bps,
    )
    if s.cpu_quota_cores is not None:
        msg.cpu_quota_cores = s.cpu_quota_cores
    if s.memory_used_mib is not None:
        msg.memory_used_mib = s.memory_used_mib
    if s.memory_available_mib is not None:
        msg.memory_available_mib = s.memory_available_mib
    return msg
