"""Conversions to protobuf shared by the agent and the coordinator (both sides of the wire)."""

from __future__ import annotations

from presculpt.agent.model import VmSample
from presculpt.coordinator.model import SampleRow
from presculpt.v1 import model_pb2


def vm_sample_pb(s: VmSample | SampleRow) -> model_pb2.VmSample:
    """One VM sample (the agent's or the store's: same fields) as a message; None stays unset."""
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
