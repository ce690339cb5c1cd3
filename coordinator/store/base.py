"""The metric store interface. One module per backend (``sqlite.py`` first)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol, runtime_checkable

from presculpt.coordinator.model import (
    BatchStored,
    ForecastRecord,
    HostRecord,
    HostSampleRow,
    MetricBatch,
    RollupRow,
    SampleRow,
    VmRecord,
)


class StoreError(Exception):
    """The store failed (disk full, corrupt file); the message is one readable line."""


class BatchRejected(StoreError):
    """A batch was refused as a whole (e.g. it names a VM the host does not have); nothing stored."""


@runtime_checkable
class MetricStore(Protocol):
    """Durable hosts, VMs and samples. ``submit_batch`` resolves only once the batch is durable."""

    def start(self) -> None: ...
    def stop(self) -> None: ...

    # -- writes --------------------------------------------------------------------------
    def upsert_inventory(self, host: HostRecord, vms: Sequence[VmRecord]) -> None:
        """Record a host and its full inventory (VMs absent from it are marked gone)."""
        ...

    def submit_batch(self, batch: MetricBatch) -> "Future[BatchStored]":
        """Queue a batch; the future resolves once it is committed, or fails with BatchRejected."""
        ...

    def store_batch(self, batch: MetricBatch) -> BatchStored:
        """``submit_batch`` and wait."""
        ...

    def import_rollups(self, host: str, rows: Sequence[RollupRow]) -> int:
        """Store roll-ups of history kept elsewhere (an older store, a trace) for VMs of ``host``
        the store knows (by ``uuid``), replacing buckets of the same start; metrics missing from a
        row's stats are unknown. Returns the rows stored; raises StoreError naming an unknown VM."""
        ...

    # -- reads ---------------------------------------------------------------------------
    def last_seq(self, agent_id: str) -> int:
        """The highest batch seq stored for this agent (0: none)."""
        ...

    def hosts(self) -> list[HostRecord]: ...
    def vms(self, host: str | None = None) -> list[VmRecord]:
        """VMs present in their host's latest inventory."""
        ...

    def latest_samples(self, host: str | None = None) -> dict[tuple[str, str], SampleRow]:
        """The newest sample of every VM, keyed by (host, uuid)."""
        ...

    def latest_host_samples(self) -> dict[str, HostSampleRow]: ...
    def samples(
        self, host: str, uuid: str, start: float, end: float, limit: int = 0
    ) -> list[SampleRow]: ...
    def rollups(self, host: str, uuid: str, start: float, end: float) -> list[RollupRow]: ...
    def count_samples(self) -> int: ...

    def rollup_means(self, metrics: Sequence[str], start: float, end: float
                     ) -> dict[tuple[str, str], list[tuple[float, ...]]]:
        """Every present VM's bucket means of ``metrics`` in ``[start, end)``, in one scan."""
        ...

    def rollup_peaks(self, metric: str, start: float, end: float) -> dict[tuple[str, str], float]:
        """Every present VM's highest bucket mean of ``metric`` in ``[start, end)`` (VMs without
        one in that span are left out)."""
        ...

    # -- forecasts -----------------------------------------------------------------------
    def store_forecasts(self, records: Sequence[ForecastRecord]) -> int:
        """Store forecasts (replacing those of the same VM, metric and origin); returns how many."""
        ...

    def forecasts(self, host: str, uuid: str, metric: str, start: float, end: float) -> list[ForecastRecord]:
        """One VM metric's forecasts with ``start <= origin < end``, oldest first."""
        ...

    def latest_forecasts(self, start: float, end: float) -> list[ForecastRecord]:
        """The newest forecast of every present VM and metric with ``start <= origin < end``."""
        ...

    # -- maintenance (the scheduled jobs call these) --------------------------------------
    def compute_rollups(self, now: float) -> int:
        """Aggregate closed buckets (and buckets that received late samples); returns buckets written."""
        ...

    def apply_retention(self, now: float) -> int:
        """Delete raw samples and roll-ups past their retention; returns rows deleted."""
        ...
