"""``presculpt bench forecast``: how long the LSTM forecaster takes to forecast many series at once.

The coordinator forecasts every series (CPU and memory of every VM) each step in one
``LstmForecaster.predict`` call, so that call's wall time over ``--series`` histories is the
figure (the goal: under 1 s for 10,000 series on a 2-core machine). The histories are synthetic
but shaped like real ones: ``--days`` of 5-minute steps with a daily and weekly pattern, slow
drift, noise, short spikes and the odd gap; half CPU (cores, on VMs of 1 to 16 vCPUs), half memory
(MiB, on VMs of 1 to 64 GiB). The model is a checkpoint (``--model``) or, by default, a freshly
initialised network of the default size with zero calibration: the weights do not change how long
it takes, only the size does.

After one warm-up call, ``predict`` is timed ``--repeat`` times. Each repeat also runs the same
steps as ``predict`` one by one to say where the time goes (the warm/cold split, cold-start
forecasts, filling gaps and building the feature windows, the network's forward pass,
calibration, the forecast objects); the stages' sum is printed next to the measured total.
Other processes using the CPU slow every figure down; the bench measures how much CPU the rest of
the machine used while it timed and prints it.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from presculpt.clitools import positive_float, positive_int
from presculpt.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from presculpt.coordinator.forecast.base import QuantileForecast, SeriesHistory
    from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster

log = logging.getLogger(__name__)

GOAL_SECONDS_PER_10K = 1.0
BENCH_ORIGIN_TS = 1_700_000_100.0  # a fixed grid time (5-minute aligned): the same histories every run
CPU_SIZES = (1, 2, 4, 8, 16)  # vCPUs
MEMORY_SIZES_MIB = (1024, 2048, 4096, 8192, 16384, 65536)
WORKLOAD_CLASSES = ("", "web", "batch", "database", "cache")
# numpy, torch and the forecaster are imported where used: building the command line stays quick.
# The stages of one predict call, in order (see staged_predict).
STAGES = ("split", "cold_start", "windows", "network", "calibrate", "forecast_objects")


@dataclass(frozen=True)
class ForecastBenchResult:
    series: int
    days: float
    repeat: int
    threads: int
    model: str  # the checkpoint's path, or "untrained default"
    seconds_median: float  # wall time of one predict() over all series
    seconds_best: float
    forecasts_per_second: float  # series / seconds_median
    breakdown: dict[str, float]  # median seconds of each stage of the same work done step by step
    cpus: int
    other_processes_cores: float  # CPU used by the rest of the machine while timing (contention)


def synthetic_histories(n: int, days: float = 8.0, seed: int = 0) -> list[SeriesHistory]:
    """``n`` histories ending at one origin: even indices CPU, odd indices memory, of one VM each.

    CPU: a base load (lognormal, a few % to most of the VM) with a daily cycle of random phase
    and depth, quieter weekends for some, AR(1) noise and short spikes, clipped to the VM's
    size. Memory: a level that drifts and steps (restarts, caches filling) with a shallow daily
    cycle. One in ten series has a gap of up to an hour (NaN, as when an agent was away).
    """
    import numpy as np

    from presculpt.coordinator.forecast.base import DAY_STEPS, STEP_S, SeriesHistory

    rng = np.random.default_rng(seed)
    steps = int(round(days * DAY_STEPS))
    start_ts = BENCH_ORIGIN_TS - steps * STEP_S
    t = start_ts + STEP_S * np.arange(steps)
    day_angle = 2 * np.pi * (t % 86400) / 86400
    weekend = ((t // 86400 + 4) % 7 >= 5).astype(np.float64)  # 1 Jan 1970 was a Thursday
    out: list[SeriesHistory] = []
    chunk = 512  # series generated together (keeps the temporary arrays small)
    for first in range(0, n, chunk):
        m = min(chunk, n - first)
        phase = rng.uniform(0, 2 * np.pi, (m, 1))
        depth = rng.uniform(0.0, 0.8, (m, 1))
        daily = 1 + depth * np.sin(day_angle[None, :] + phase)
        weekly = 1 - rng.uniform(0, 0.5, (m, 1)) * (rng.random((m, 1)) < 0.5) * weekend[None, :]
        noise = ar1(rng.normal(0, 0.12, (m, steps)), 0.8)
        spikes = (rng.random((m, steps)) < 0.004) * rng.exponential(2.0, (m, steps))
        spikes = np.maximum(spikes, np.roll(spikes, 1, axis=1) * 0.6)  # spikes last a step or two
        is_cpu = (first + np.arange(m)) % 2 == 0
        capacity = np.where(is_cpu, rng.choice(CPU_SIZES, m), rng.choice(MEMORY_SIZES_MIB, m)).astype(float)
        cpu_base = np.clip(rng.lognormal(np.log(0.15), 0.8, (m, 1)), 0.01, 0.9)
        cpu = cpu_base * daily * weekly * np.exp(noise) * (1 + spikes)
        drift = np.cumsum(rng.normal(0, 0.002, (m, steps)), axis=1)
        restarts = np.cumsum((rng.random((m, steps)) < 0.0005) * rng.normal(0, 0.15, (m, steps)), axis=1)
        mem_base = rng.uniform(0.2, 0.8, (m, 1))
        memory = mem_base * (1 + 0.1 * depth * np.sin(day_angle[None, :] + phase)) + drift + restarts \
            + 0.01 * noise
        values = np.clip(np.where(is_cpu[:, None], cpu, memory), 0.0, 1.05) * capacity[:, None]
        for row in range(m):
            i = first + row
            series = values[row]
            if rng.random() < 0.1:
                gap_start = rng.integers(0, steps)
                series[gap_start:gap_start + rng.integers(1, 13)] = np.nan
            metric = "cpu_cores" if is_cpu[row] else "memory_mib"
            out.append(SeriesHistory(
                key=f"bench-host-{i // 60:03d}/vm-{i // 2:05d}/{metric}", metric=metric, origin=BENCH_ORIGIN_TS,
                values=series, capacity=float(capacity[row]),
                workload_class=WORKLOAD_CLASSES[rng.integers(len(WORKLOAD_CLASSES))],
                customer="" if rng.random() < 0.3 else f"customer-{rng.integers(50):02d}",
            ))
    return out


def ar1(shocks: np.ndarray, phi: float) -> np.ndarray:
    """AR(1) noise along the last axis: ``x[t] = phi * x[t-1] + shocks[t]`` (load that lingers)."""
    out = shocks.copy()
    for t in range(1, out.shape[-1]):
        out[..., t] += phi * out[..., t - 1]
    return out


def load_forecaster(checkpoint: str | None, threads: int) -> tuple[LstmForecaster, str]:
    """The checkpoint's forecaster, or an untrained one of the default size (same speed)."""
    import numpy as np
    import torch

    from presculpt.coordinator.forecast.lstm.module import ModelConfig, QuantileLSTM
    from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster

    if checkpoint:
        try:
            forecaster = LstmForecaster.load(checkpoint)
        except FileNotFoundError:
            raise UserError(f"--model {checkpoint}: no such file") from None
        except Exception as err:  # a bad checkpoint fails in torch.load or load_state_dict, in many ways
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(f"--model {checkpoint}: not a forecaster checkpoint ({first_line})") from None
        label = checkpoint
    else:
        torch.manual_seed(0)
        config = ModelConfig()
        calibration = np.zeros((config.n_metrics, config.horizon, len(config.quantiles)))
        forecaster = LstmForecaster(QuantileLSTM(config), calibration, name="lstm-untrained")
        label = "untrained default"
    forecaster.threads = threads
    return forecaster, label


def staged_predict(forecaster: LstmForecaster, histories: Sequence[SeriesHistory]
                   ) -> tuple[list[QuantileForecast], dict[str, float]]:
    """``forecaster.predict(histories)`` done step by step, with the seconds of each step: it calls
    the same named steps as ``LstmForecaster.predict`` (split, cold start, windows, network,
    calibrate, forecasts) in the same order. Tests check that both give the same forecasts."""
    seconds = dict.fromkeys(STAGES, 0.0)
    clock = time.perf_counter

    t0 = clock()
    warm, cold = forecaster.split(histories)
    t1 = clock()
    out = {id(h): f for h, f in zip(cold, forecaster.cold_start.predict(cold))}
    t2 = clock()
    seconds["split"], seconds["cold_start"] = t1 - t0, t2 - t1
    if warm:
        t0 = clock()
        windows = forecaster.windows(warm)
        t1 = clock()
        scaled = forecaster.network(windows)
        t2 = clock()
        predicted = forecaster.calibrate(scaled, windows)
        t3 = clock()
        out.update(zip(map(id, warm), forecaster.forecasts(warm, predicted)))
        seconds["forecast_objects"] = clock() - t3
        seconds["windows"], seconds["network"], seconds["calibrate"] = t1 - t0, t2 - t1, t3 - t2
    t0 = clock()
    forecasts = [out[id(h)] for h in histories]
    seconds["forecast_objects"] += clock() - t0
    return forecasts, seconds


class OtherLoad:
    """How many cores the rest of the machine used since creation: a bench that shares its CPU
    with, say, a training run reports slower figures, and should say so."""

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.busy = self._busy()
        self.own = self._own()

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()  # guest time is already inside user time: not summed again
        return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))

    @staticmethod
    def _own() -> float:
        times = psutil.Process().cpu_times()
        return times.user + times.system

    def cores(self) -> float:
        wall = time.monotonic() - self.wall
        if wall <= 0:
            return 0.0
        return max(0.0, (self._busy() - self.busy) - (self._own() - self.own)) / wall


def run_forecast_bench(series: int, days: float = 8.0, repeat: int = 5, checkpoint: str | None = None,
                       threads: int = 2, progress: Callable[[str], None] = log.info, profile_top: int = 0
                       ) -> tuple[ForecastBenchResult, str]:
    """Time ``predict`` over ``series`` synthetic histories (after a warm-up call); with
    ``profile_top``, also profile one more call (not counted) and return its top functions."""
    from presculpt.coordinator.forecast.base import DAY_STEPS
    from presculpt.coordinator.forecast.features import MIN_HISTORY

    if days * DAY_STEPS < MIN_HISTORY:
        raise UserError(f"--days {days:g}: the LSTM needs {MIN_HISTORY / DAY_STEPS:g} days of history; with "
                        "less every series is a cold start and the network is not timed")
    forecaster, label = load_forecaster(checkpoint, threads)
    progress(f"building {series:,} synthetic histories of {days:g} days")
    histories = synthetic_histories(series, days)
    progress(f"warm-up call ({label} model, {threads} thread(s))")
    forecaster.predict(histories)
    totals: list[float] = []
    stages: list[dict[str, float]] = []
    others = OtherLoad()
    for i in range(repeat):
        started = time.perf_counter()
        forecaster.predict(histories)
        totals.append(time.perf_counter() - started)
        stages.append(staged_predict(forecaster, histories)[1])
        progress(f"repeat {i + 1}/{repeat}: predict {totals[-1]:.3f} s, stages {sum(stages[-1].values()):.3f} s")
    other_cores = others.cores()
    median = statistics.median(totals)
    result = ForecastBenchResult(
        series=series, days=days, repeat=repeat, threads=threads, model=label,
        seconds_median=round(median, 4), seconds_best=round(min(totals), 4),
        forecasts_per_second=round(series / median, 1),
        breakdown={stage: round(statistics.median(s[stage] for s in stages), 4) for stage in STAGES},
        cpus=psutil.cpu_count() or 1, other_processes_cores=round(other_cores, 2),
    )
    profile = ""
    if profile_top:
        progress("profiling one more call")
        profile = profile_predict(forecaster, histories, profile_top)
    return result, profile


def profile_predict(forecaster: LstmForecaster, histories: Sequence[SeriesHistory], top: int) -> str:
    """The ``top`` functions by cumulative time in one more ``predict`` call (cProfile): finer than
    the stages, and true to whatever ``predict`` does today. Profiling slows the call down."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(forecaster.predict, histories)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    body = text.getvalue()
    return body[body.find("   ncalls"):].rstrip() if "   ncalls" in body else body.rstrip()


def bench_report(result: ForecastBenchResult) -> str:
    """The figures as text: the wall time, and where it goes."""
    per_10k = result.seconds_median * 10_000 / result.series
    verdict = "meets" if per_10k < GOAL_SECONDS_PER_10K else "misses"
    lines = [
        f"forecast: LstmForecaster.predict over {result.series:,} series ({result.days:g} days of history each, "
        f"half CPU, half memory), {result.threads} thread(s), {result.repeat} timed call(s) after a warm-up",
        f"  model: {result.model}"
        + (" (weights do not change the speed; the network's size does)" if result.model == "untrained default"
           else ""),
        f"  wall time per call: median {result.seconds_median:.3f} s, best {result.seconds_best:.3f} s "
        f"({result.forecasts_per_second:,.0f} forecasts/s)",
        f"  per 10,000 series: {per_10k:.3f} s, which {verdict} the goal of {GOAL_SECONDS_PER_10K:g} s",
        f"  other processes used {result.other_processes_cores:.2f} of {result.cpus} cores while timing"
        + (": the figures are slower than on an idle machine" if result.other_processes_cores >= 0.25 else ""),
        f"  where the time goes (the same steps run one by one; median of {result.repeat} per step, "
        f"together {sum(result.breakdown.values()):.3f} s):",
    ]
    total = sum(result.breakdown.values()) or 1.0
    for stage, seconds in sorted(result.breakdown.items(), key=lambda item: -item[1]):
        lines.append(f"    {stage:<22} {seconds:8.3f} s  {100 * seconds / total:5.1f}%")
    return "\n".join(lines)


def cmd_bench_forecast(args: argparse.Namespace) -> int:
    result, profile = run_forecast_bench(args.series, args.days, args.repeat, args.model, args.threads,
                                         profile_top=args.profile or 0)
    print(bench_report(result))
    if profile:
        print(f"\n  one more predict() under cProfile (slower), the top {args.profile} by cumulative time:")
        print(profile)
    if args.json:
        Path(args.json).write_text(json.dumps(bench_json(result), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def bench_json(result: ForecastBenchResult) -> dict[str, Any]:
    """``series``, ``seconds_median``, ``seconds_best`` and ``breakdown`` (plus the run's settings)."""
    return asdict(result)


def add_forecast_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``forecast`` to the ``presculpt bench`` subcommands."""
    p = bench_sub.add_parser("forecast", help="forecaster speed: one predict() over many series",
                             description="Time one LstmForecaster.predict call over --series synthetic "
                                         "histories (half CPU, half memory), after a warm-up call, and "
                                         "show where the time goes.")
    p.add_argument("--series", type=positive_int, default=10_000, help="series to forecast at once (default 10000)")
    p.add_argument("--days", type=positive_float, default=8.0, help="days of history per series (default 8)")
    p.add_argument("--model", metavar="CHECKPOINT",
                   help="a trained forecaster (default: an untrained network of the default size)")
    p.add_argument("--repeat", type=positive_int, default=5, help="timed calls after the warm-up (default 5)")
    p.add_argument("--threads", type=positive_int, default=2,
                   help="torch threads (default 2, the forecaster's default)")
    p.add_argument("--profile", type=positive_int, metavar="N",
                   help="also profile one more call and print the N functions taking the most time")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    p.set_defaults(func=cmd_bench_forecast, progress=True)
