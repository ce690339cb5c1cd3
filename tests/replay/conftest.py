"""A slice of the real Bitbrains trace (6 VMs, 9 days) for the replay's tests."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest

from presculpt.lab.trace import load_trace

TRACE = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "bitbrains-rnd-2013-08"
SLICE_VMS = 6
SLICE_DAYS = 9  # 7 of warm-up, 2 scored


@pytest.fixture(scope="module")
def trace_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 9 days of 6 real VMs, written in the canonical format."""
    if not TRACE.is_dir():
        pytest.skip(f"the shared trace is not at {TRACE}")
    with open(TRACE / "vms.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    picked = rows[:: len(rows) // SLICE_VMS][:SLICE_VMS]
    out = tmp_path_factory.mktemp("trace")
    with open(out / "vms.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["vm_id", "max_vcpus", "max_mem_mib"])
        writer.writeheader()
        writer.writerows(picked)
    series = load_trace(TRACE, [r["vm_id"] for r in picked], fill_gaps=False)
    with gzip.open(out / "usage.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["vm_id", "ts", "cpu_cores", "mem_mib"])
        for vm_id, t in series.items():
            end = t.ts[0] + SLICE_DAYS * 86400
            for ts, cpu, mem in zip(t.ts, t.cpu_cores, t.mem_mib):
                if ts < end:
                    writer.writerow([vm_id, ts, f"{cpu:.4f}", "" if mem != mem else f"{mem:.1f}"])
    return out
