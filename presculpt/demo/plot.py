"""One picture per guest: demand, the forecast band and the allocation over the replayed window."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from presculpt.demo.record import ActionRecord, Score, StepRecord
from presculpt.lab.trace import GRID_S

QUANTILE_COLUMNS = {"p10": 0, "p50": 1, "p90": 2, "p99": 3}  # the forecaster's levels (0.1, 0.5, 0.9, 0.99)


def plot_guest(path: Path, title: str, steps: Sequence[StepRecord], actions: Sequence[ActionRecord],
               max_vcpus: int, static_mem_mib: float, presculpt: Score, static: Score) -> Path:
    """Write a PNG of one guest: CPU above, memory below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    def when(ts: float) -> datetime:
        return datetime.fromtimestamp(ts, timezone.utc)

    times = [when(s.ts) for s in steps]
    edges = times + [when(steps[-1].ts + GRID_S)] if steps else []
    fig, (cpu, mem) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for ax, demand, alloc, band, static_level, unit, what in (
        (cpu, [s.demand_cores for s in steps], [s.alloc_cores for s in steps], [s.cpu_forecast for s in steps],
         float(max_vcpus), "cores", "demand (trace)"),
        (mem, [s.demand_mem_mib for s in steps], [s.alloc_mem_mib for s in steps], [s.mem_forecast for s in steps],
         round(static_mem_mib), "MiB (MemTotal)", "demand (guest's own + trace)"),
    ):
        mids = [when(s.ts + GRID_S / 2) for s in steps]
        have = [i for i, b in enumerate(band) if b is not None]
        if have:
            x = [mids[i] for i in have]
            ax.fill_between(x, [band[i][0] for i in have], [band[i][2] for i in have], color="tab:blue", alpha=0.18,
                            label="forecast p10-p90")
            ax.plot(x, [band[i][3] for i in have], color="tab:blue", lw=0.9, ls="--", label="forecast p99")
            ax.plot(x, [band[i][1] for i in have], color="tab:blue", lw=0.9, label="forecast p50")
        if steps:
            ax.stairs(demand, edges, color="black", lw=1.4, baseline=None, label=what)
            ax.stairs([a if a is not None else float("nan") for a in alloc], edges, color="tab:red", lw=1.6,
                      baseline=None, label="allocation (Presculpt)")
        # The static allocation (the maximum) would flatten the rest: drawn only when it is near.
        top = max([v for v in demand + alloc if v is not None] + [b[3] for b in band if b is not None] + [0.1])
        if static_level <= top * 1.6:
            ax.axhline(static_level, color="grey", ls=":", lw=1.2, label="static allocation")
            top = static_level
        else:
            ax.text(0.99, 0.97, f"static allocation: {static_level:g} {unit.split()[0]} (off the chart)", ha="right", va="top",
                    transform=ax.transAxes, fontsize=8, color="grey")
        ax.set_ylabel(unit)
        ax.set_ylim(0, top * 1.15)
        ax.grid(alpha=0.3)
    for a in actions:
        if a.applied and steps:
            t = when(a.command.issued_at)
            for ax in (cpu, mem):
                ax.axvline(t, color="tab:green", alpha=0.35, lw=0.8)
    cpu.set_title(f"{title}\nCPU: violation {_pct(presculpt.violation)}, slack {_pct(presculpt.slack)} "
                  f"(static: {_pct(static.violation)}, {_pct(static.slack)}); green lines: applied actions",
                  fontsize=10)
    mem.set_title(f"memory: violation {_pct(presculpt.memory_violation)}, slack {_pct(presculpt.memory_slack)} "
                  f"(static: {_pct(static.memory_violation)}, {_pct(static.memory_slack)})", fontsize=10)
    cpu.legend(loc="upper left", fontsize=8, ncol=3)
    mem.legend(loc="upper left", fontsize=8, ncol=3)
    mem.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))
    mem.set_xlabel("trace time (UTC)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
