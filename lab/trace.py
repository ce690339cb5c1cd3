"""Reader of the canonical trace format (``vms.csv`` + ``usage.csv.gz``, see traces/FORMAT.md).

Shared by the lab's load generator, the forecaster and the replay. Plain Python with the
``array`` module: no numpy needed (``numpy.asarray(trace.cpu_cores)`` works on the arrays).
Unknown memory is NaN, never zero.
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from presculpt.errors import UserError

log = logging.getLogger(__name__)

GRID_S = 300  # the sampling grid of the canonical format, seconds
VMS_FILE = "vms.csv"
USAGE_FILE = "usage.csv.gz"
NAN = float("nan")


class TraceError(UserError):
    """The trace directory is missing, unreadable or not in the canonical format."""


@dataclass(frozen=True)
class VmShape:
    """One row of ``vms.csv``: a VM's provisioned size (``max_mem_mib`` None when unknown)."""

    vm_id: str
    max_vcpus: int
    max_mem_mib: float | None


@dataclass(frozen=True, eq=False)
class VmTrace:
    """One VM's usage series: ``ts`` (Unix s), ``cpu_cores`` and ``mem_mib`` (NaN = unknown),
    all the same length, sorted by ``ts``."""

    vm_id: str
    max_vcpus: int
    max_mem_mib: float | None
    ts: array[int]  # array('q')
    cpu_cores: array[float]  # array('d')
    mem_mib: array[float]  # array('d'), NaN where unknown

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def has_memory(self) -> bool:
        """True when the VM has a provisioned memory size and at least one known sample."""
        return self.max_mem_mib is not None and any(not math.isnan(v) for v in self.mem_mib)


def read_vms(trace_dir: str | Path) -> list[VmShape]:
    """The VMs of ``vms.csv`` in file order."""
    path = Path(trace_dir) / VMS_FILE
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            _require_columns(reader.fieldnames, ("vm_id", "max_vcpus", "max_mem_mib"), path)
            shapes = []
            for line, row in enumerate(reader, start=2):
                try:
                    shapes.append(
                        VmShape(
                            vm_id=row["vm_id"],
                            max_vcpus=int(float(row["max_vcpus"])),
                            max_mem_mib=_optional_float(row["max_mem_mib"]),
                        )
                    )
                except (TypeError, ValueError) as err:
                    raise TraceError(f"{path}:{line}: bad value ({err})") from None
    except FileNotFoundError:
        raise TraceError(f"{path} does not exist (is {trace_dir} a trace directory?)") from None
    except OSError as err:
        raise TraceError(f"cannot read {path}: {err}") from None
    return shapes


def load_trace(
    trace_dir: str | Path,
    vm_ids: Iterable[str] | None = None,
    *,
    fill_gaps: bool = True,
    grid_s: int = GRID_S,
) -> dict[str, VmTrace]:
    """Every VM's series (or only ``vm_ids``), keyed by vm_id in ``vms.csv`` order.

    With ``fill_gaps`` missing grid slots are inserted with the previous sample's values and
    unknown memory values take the last known one (leading unknowns stay NaN).
    """
    shapes = {shape.vm_id: shape for shape in read_vms(trace_dir)}
    wanted: set[str] | None = None
    if vm_ids is not None:
        wanted = set(vm_ids)
        unknown = sorted(wanted - set(shapes))
        if unknown:
            raise TraceError(f"VM {unknown[0]!r} is not in {Path(trace_dir) / VMS_FILE}")
    series = _read_usage(Path(trace_dir) / USAGE_FILE, wanted, shapes)
    result: dict[str, VmTrace] = {}
    for vm_id, shape in shapes.items():
        if wanted is not None and vm_id not in wanted:
            continue
        rows = series.get(vm_id, [])
        ts, cpu, mem = _sorted_unique(rows)
        if fill_gaps:
            ts, cpu, mem = forward_fill(ts, cpu, mem, grid_s)
        result[vm_id] = VmTrace(vm_id, shape.max_vcpus, shape.max_mem_mib, ts, cpu, mem)
    return result


def forward_fill(
    ts: array[int], cpu_cores: array[float], mem_mib: array[float], grid_s: int = GRID_S
) -> tuple[array[int], array[float], array[float]]:
    """Fill missing grid slots with the previous sample and unknown memory with the last known."""
    out_ts: array[int] = array("q")
    out_cpu: array[float] = array("d")
    out_mem: array[float] = array("d")
    last_mem = NAN
    for i, t in enumerate(ts):
        if i:
            missing = round((t - ts[i - 1]) / grid_s) - 1
            for k in range(1, missing + 1):
                out_ts.append(ts[i - 1] + k * grid_s)
                out_cpu.append(cpu_cores[i - 1])
                out_mem.append(last_mem)
        mem = mem_mib[i]
        if not math.isnan(mem):
            last_mem = mem
        out_ts.append(t)
        out_cpu.append(cpu_cores[i])
        out_mem.append(last_mem)
    return out_ts, out_cpu, out_mem


def _read_usage(
    path: Path, wanted: set[str] | None, shapes: dict[str, VmShape]
) -> dict[str, list[tuple[int, float, float]]]:
    series: dict[str, list[tuple[int, float, float]]] = {}
    strays: set[str] = set()
    try:
        with gzip.open(path, "rt", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            _require_columns(header, ("vm_id", "ts", "cpu_cores", "mem_mib"), path)
            assert header is not None
            i_vm, i_ts, i_cpu, i_mem = (
                header.index(c) for c in ("vm_id", "ts", "cpu_cores", "mem_mib")
            )
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                vm_id = row[i_vm]
                if wanted is not None and vm_id not in wanted:
                    continue
                if vm_id not in shapes:
                    strays.add(vm_id)
                    continue
                try:
                    sample = (int(float(row[i_ts])), float(row[i_cpu]), _optional_float(row[i_mem]))
                except (ValueError, IndexError) as err:
                    raise TraceError(f"{path}:{line}: bad value ({err})") from None
                series.setdefault(vm_id, []).append(
                    (sample[0], sample[1], NAN if sample[2] is None else sample[2])
                )
    except FileNotFoundError:
        raise TraceError(f"{path} does not exist") from None
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise TraceError(f"cannot read {path}: {err}") from None
    if strays:
        log.warning("%s: ignoring %d VM(s) missing from %s", path, len(strays), VMS_FILE)
    return series


def _sorted_unique(
    rows: list[tuple[int, float, float]],
) -> tuple[array[int], array[float], array[float]]:
    """Rows sorted by ts; of several rows with one ts the last wins."""
    by_ts = {ts: (cpu, mem) for ts, cpu, mem in rows}
    ts_sorted = sorted(by_ts)
    return (
        array("q", ts_sorted),
        array("d", (by_ts[t][0] for t in ts_sorted)),
        array("d", (by_ts[t][1] for t in ts_sorted)),
    )


def _optional_float(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    value = float(text)
    return None if math.isnan(value) else value


def _require_columns(found: Iterable[str] | None, needed: tuple[str, ...], path: Path) -> None:
    missing = [c for c in needed if c not in (found or ())]
    if missing:
        raise TraceError(f"{path}: missing column(s) {', '.join(missing)}")
