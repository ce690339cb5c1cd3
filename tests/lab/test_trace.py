"""The canonical trace reader on small traces written in tmp_path."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest

from presculpt.lab.trace import TraceError, forward_fill, load_trace, read_vms


def write_trace(root: Path, vms: str, usage: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "vms.csv").write_text(vms)
    with gzip.open(root / "usage.csv.gz", "wt") as handle:
        handle.write(usage)
    return root


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    return write_trace(
        tmp_path / "trace",
        "vm_id,max_vcpus,max_mem_mib\nvm-a,2,4096\nvm-b,4,\nvm-c,1,1024\n",
        "vm_id,ts,cpu_cores,mem_mib\n"
        # vm-a: one missing slot (1200) and one unknown memory value (1500)
        "vm-a,600,0.5,1000\n"
        "vm-a,900,1.0,1100\n"
        "vm-a,1500,1.5,\n"
        "vm-a,1800,2.1,1300\n"
        # vm-b: CPU only, rows out of order
        "vm-b,900,3.0,\n"
        "vm-b,600,2.0,\n"
        # a VM missing from vms.csv is ignored
        "vm-x,600,9.0,9\n",
    )


def test_read_vms_in_file_order(trace_dir: Path) -> None:
    shapes = read_vms(trace_dir)
    assert [s.vm_id for s in shapes] == ["vm-a", "vm-b", "vm-c"]
    assert shapes[0].max_vcpus == 2 and shapes[0].max_mem_mib == 4096
    assert shapes[1].max_mem_mib is None


def test_gaps_are_forward_filled(trace_dir: Path) -> None:
    vm = load_trace(trace_dir)["vm-a"]
    assert list(vm.ts) == [600, 900, 1200, 1500, 1800]
    assert list(vm.cpu_cores) == [0.5, 1.0, 1.0, 1.5, 2.1]
    assert list(vm.mem_mib) == [1000, 1100, 1100, 1100, 1300]
    assert vm.has_memory and len(vm) == 5


def test_without_filling_unknown_memory_is_nan(trace_dir: Path) -> None:
    vm = load_trace(trace_dir, fill_gaps=False)["vm-a"]
    assert list(vm.ts) == [600, 900, 1500, 1800]
    assert math.isnan(vm.mem_mib[2])


def test_cpu_only_vm_and_sorting(trace_dir: Path) -> None:
    traces = load_trace(trace_dir)
    vm = traces["vm-b"]
    assert list(vm.ts) == [600, 900]
    assert list(vm.cpu_cores) == [2.0, 3.0]
    assert all(math.isnan(v) for v in vm.mem_mib)
    assert not vm.has_memory
    assert "vm-x" not in traces
    assert len(traces["vm-c"]) == 0


def test_selecting_vms(trace_dir: Path) -> None:
    assert list(load_trace(trace_dir, ["vm-b"])) == ["vm-b"]
    with pytest.raises(TraceError, match="vm-z"):
        load_trace(trace_dir, ["vm-z"])


def test_forward_fill_leading_unknown_memory_stays_nan() -> None:
    from array import array

    ts, cpu, mem = forward_fill(
        array("q", [0, 600]), array("d", [1.0, 2.0]), array("d", [float("nan"), 5.0])
    )
    assert list(ts) == [0, 300, 600]
    assert list(cpu) == [1.0, 1.0, 2.0]
    assert math.isnan(mem[0]) and math.isnan(mem[1]) and mem[2] == 5.0


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="does not exist"):
        load_trace(tmp_path / "missing")
    bad = write_trace(tmp_path / "bad", "vm_id,max_vcpus\nvm-a,2\n", "")
    with pytest.raises(TraceError, match="max_mem_mib"):
        read_vms(bad)
    broken = write_trace(
        tmp_path / "broken",
        "vm_id,max_vcpus,max_mem_mib\nvm-a,2,\n",
        "vm_id,ts,cpu_cores,mem_mib\nvm-a,600,lots,\n",
    )
    with pytest.raises(TraceError, match="usage.csv.gz:2"):
        load_trace(broken)
