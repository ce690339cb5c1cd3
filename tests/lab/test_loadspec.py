"""Load specs: rendering, parsing, trace scaling and the per-guest archive."""

from __future__ import annotations

from array import array

import pytest

from presculpt.lab.cpio import pad_to, read_cpio
from presculpt.lab.loadspec import (
    SPEC_PATH_IN_GUEST,
    LoadSpec,
    LoadStep,
    constant_load,
    trace_load,
)
from presculpt.lab.trace import VmTrace


def make_trace(
    cpu: list[float], mem: list[float], max_vcpus: int = 2, max_mem: float | None = 2048
) -> VmTrace:
    return VmTrace(
        "vm a",
        max_vcpus,
        max_mem,
        array("q", [300 * i for i in range(len(cpu))]),
        array("d", cpu),
        array("d", mem),
    )


def test_constant_load_renders_what_guestd_reads() -> None:
    spec = constant_load(1.5, 100)
    text = spec.render()
    assert "seconds_per_step 0\n" in text
    assert "step 1.5000 100\n" in text
    assert LoadSpec.parse(text) == spec


def test_round_trip_of_a_stepped_spec() -> None:
    spec = LoadSpec(
        (LoadStep(0.25, 10), LoadStep(2.0, 200)),
        seconds_per_step=1.5,
        repeat=True,
        label="x",
        mem_reserve_mib=16,
    )
    assert LoadSpec.parse(spec.render()) == spec
    assert spec.duration_s == 3.0
    waiting = LoadSpec((LoadStep(1.0, 0),), seconds_per_step=2, start_on_nmi=True)
    assert "start_on_nmi 1\n" in waiting.render()
    assert LoadSpec.parse(waiting.render()) == waiting
    assert "start_on_nmi" not in spec.render()


def test_invalid_specs_are_refused() -> None:
    with pytest.raises(ValueError):
        LoadSpec(())
    with pytest.raises(ValueError):
        LoadSpec((LoadStep(1, 1),), label="has space")
    with pytest.raises(ValueError):
        constant_load(-1, 0)


def test_trace_load_scales_to_the_guest() -> None:
    nan = float("nan")
    trace = make_trace([0.5, 2.0, 2.2, 1.0], [1024, nan, 4096, 512])
    spec = trace_load(trace, seconds_per_step=2, guest_max_vcpus=4, guest_mem_budget_mib=256)
    # CPU: cores / 2 max vCPUs * 4 guest vCPUs, capped at the guest's 4
    assert [s.cpu_cores for s in spec.steps] == [1.0, 4.0, 4.0, 2.0]
    # memory: MiB / 2048 * 256, unknown -> 0, capped at the budget
    assert [s.mem_mib for s in spec.steps] == [128, 0, 256, 64]
    assert spec.seconds_per_step == 2
    assert spec.label == "trace:vm_a@0"


def test_trace_load_offset_and_step_limit() -> None:
    trace = make_trace([0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0])
    spec = trace_load(trace, seconds_per_step=1, guest_max_vcpus=2, start_offset_s=600, max_steps=1)
    assert [s.cpu_cores for s in spec.steps] == [0.3]
    assert spec.label.endswith("@600")
    with pytest.raises(ValueError, match="past the end"):
        trace_load(trace, seconds_per_step=1, start_offset_s=5000)
    with pytest.raises(ValueError):
        trace_load(trace, seconds_per_step=0)


def test_trace_without_memory_size_gives_no_memory_load() -> None:
    spec = trace_load(make_trace([1.0], [500], max_mem=None), seconds_per_step=1)
    assert spec.steps[0].mem_mib == 0


def test_archive_carries_the_spec_after_a_padded_base() -> None:
    spec = constant_load(0.5, 10)
    base = pad_to(b"\x1f\x8b fake gzip")
    combined = base + spec.archive()
    entries = read_cpio(combined[len(base) :])
    files = {e.name: e.data for e in entries if e.is_file}
    assert files == {SPEC_PATH_IN_GUEST: spec.render().encode()}
    assert len(base) % 4 == 0
