"""The load a lab guest generates: a sequence of (CPU cores, memory MiB) steps.

A :class:`LoadSpec` is rendered as the text file guestd reads (see the header of
``guest/guestd.c``) and shipped to the guest as a small cpio archive appended to its initramfs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from presculpt.lab.cpio import build_cpio, directory, regular
from presculpt.lab.trace import VmTrace

SPEC_PATH_IN_GUEST = "etc/presculpt/load.spec"
DEFAULT_MEM_RESERVE_MIB = 32


@dataclass(frozen=True)
class LoadStep:
    """Demand during one step: ``cpu_cores`` busy cores and ``mem_mib`` MiB held."""

    cpu_cores: float
    mem_mib: int


@dataclass(frozen=True)
class LoadSpec:
    """Steps of demand, each lasting ``seconds_per_step`` (0: the first step holds forever).

    After the last step the guest holds it, or starts over when ``repeat`` is set. guestd never
    allocates memory below ``mem_reserve_mib`` of MemAvailable. With ``start_on_nmi`` the guest
    holds the first step until the host injects an NMI (:meth:`Lab.start_loads`), so that the
    schedules of guests that booted at different times start at one instant.
    """

    steps: tuple[LoadStep, ...]
    seconds_per_step: float = 0.0
    repeat: bool = False
    label: str = "constant"
    mem_reserve_mib: int = DEFAULT_MEM_RESERVE_MIB
    start_on_nmi: bool = False

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a load spec needs at least one step")
        if self.seconds_per_step < 0 or not math.isfinite(self.seconds_per_step):
            raise ValueError(f"seconds_per_step must be >= 0, got {self.seconds_per_step}")
        if not re.fullmatch(r"[^\s]{1,127}", self.label):
            raise ValueError(f"label must be 1-127 characters without spaces, got {self.label!r}")

    @property
    def duration_s(self) -> float:
        """Seconds until the last step begins to hold (0 for a constant load)."""
        return self.seconds_per_step * len(self.steps)

    def render(self) -> str:
        """The spec as the text guestd reads."""
        lines = [
            "# presculpt load spec v1",
            f"label {self.label}",
            f"seconds_per_step {self.seconds_per_step:g}",
            f"repeat {int(self.repeat)}",
            f"mem_reserve_mib {self.mem_reserve_mib}",
        ]
        if self.start_on_nmi:
            lines.append("start_on_nmi 1")
        lines += [f"step {s.cpu_cores:.4f} {s.mem_mib}" for s in self.steps]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> LoadSpec:
        """Read a rendered spec back (the inverse of :meth:`render`)."""
        values: dict[str, str] = {}
        steps: list[LoadStep] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, _, rest = line.partition(" ")
            if key == "step":
                cpu, mem = rest.split()
                steps.append(LoadStep(float(cpu), int(float(mem))))
            else:
                values[key] = rest.strip()
        return cls(
            steps=tuple(steps),
            seconds_per_step=float(values.get("seconds_per_step", 0)),
            repeat=values.get("repeat", "0") not in ("0", ""),
            label=values.get("label", "constant"),
            mem_reserve_mib=int(values.get("mem_reserve_mib", DEFAULT_MEM_RESERVE_MIB)),
            start_on_nmi=values.get("start_on_nmi", "0") not in ("0", ""),
        )

    def archive(self) -> bytes:
        """A newc cpio archive that puts the rendered spec where guestd reads it."""
        return build_cpio(
            [
                directory("etc"),
                directory("etc/presculpt"),
                regular(SPEC_PATH_IN_GUEST, self.render().encode()),
            ]
        )


def constant_load(cpu_cores: float = 0.0, mem_mib: int = 0) -> LoadSpec:
    """A load that never changes."""
    if cpu_cores < 0 or mem_mib < 0:
        raise ValueError("cpu_cores and mem_mib must be >= 0")
    return LoadSpec(
        steps=(LoadStep(float(cpu_cores), int(mem_mib)),),
        label=f"constant:{cpu_cores:g}cores:{mem_mib}MiB",
    )


def trace_load(
    trace: VmTrace,
    *,
    seconds_per_step: float,
    guest_max_vcpus: int = 4,
    guest_mem_budget_mib: int = 256,
    start_offset_s: float = 0.0,
    max_steps: int | None = None,
    repeat: bool = False,
    start_on_nmi: bool = False,
) -> LoadSpec:
    """The load of one trace VM, scaled to a lab guest and compressed in time.

    CPU demand is scaled by ``cpu_cores / max_vcpus * guest_max_vcpus`` (a VM at its full size
    keeps the guest's ``guest_max_vcpus`` busy) and memory by ``mem_mib / max_mem_mib *
    guest_mem_budget_mib``; unknown memory becomes 0. Each trace sample (one grid slot) lasts
    ``seconds_per_step`` in the guest, starting ``start_offset_s`` trace seconds after its first
    sample. The trace should be loaded with gaps filled.
    """
    if seconds_per_step <= 0:
        raise ValueError("seconds_per_step must be > 0 for a trace load")
    if len(trace) == 0:
        raise ValueError(f"VM {trace.vm_id!r} has no samples")
    first = next((i for i, t in enumerate(trace.ts) if t >= trace.ts[0] + start_offset_s), None)
    if first is None:
        raise ValueError(
            f"start offset {start_offset_s:g} s is past the end of VM {trace.vm_id!r} "
            f"({trace.ts[-1] - trace.ts[0]} s of samples)"
        )
    last = len(trace) if max_steps is None else min(len(trace), first + max_steps)
    cpu_scale = guest_max_vcpus / max(1, trace.max_vcpus)
    mem_scale = guest_mem_budget_mib / trace.max_mem_mib if trace.max_mem_mib else 0.0
    steps = []
    for i in range(first, last):
        cpu = min(float(guest_max_vcpus), max(0.0, trace.cpu_cores[i] * cpu_scale))
        mem_raw = trace.mem_mib[i]
        mem = (
            0
            if math.isnan(mem_raw)
            else round(min(guest_mem_budget_mib, max(0.0, mem_raw * mem_scale)))
        )
        steps.append(LoadStep(round(cpu, 4), mem))
    label = re.sub(r"\s+", "_", f"trace:{trace.vm_id}@{int(trace.ts[first])}")[:127]
    return LoadSpec(tuple(steps), seconds_per_step=seconds_per_step, repeat=repeat, label=label,
                    start_on_nmi=start_on_nmi)
