"""The demo's forecaster: a small LSTM trained on the trace history before the replayed window.

It learns from every VM of the trace over the days before the window, each mapped onto the lab
guest's scale as the demo maps the guests' loads (:mod:`presculpt.demo.scenario`): CPU by its
share of the VM's vCPUs, memory as the guest reports it, its own use plus its share of the budget.
So the series it trains on look like the ones the coordinator will see. It is trained once per
trace and window (some 20-40 s on two cores) and cached as a checkpoint under the lab's cache
directory; later demos load it at once. The coordinator imports it as its first model
(``[forecast] initial_model``), exactly as an operator seeds a new coordinator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from presculpt.demo.scenario import GUEST_OWN_MEMORY_MIB, GuestScale, guest_arrays
from presculpt.lab.trace import GRID_S, VmTrace

log = logging.getLogger(__name__)

TRAIN_DAYS = 10.0  # history the model trains on (the newest day of it validates and calibrates)
VALIDATION_DAYS = 1.0
HIDDEN, HEAD_HIDDEN = 24, 48  # smaller than the production default (48, 128): trained in seconds
EPOCHS, SAMPLES_PER_EPOCH = 4, 20_000
THREADS = 2


def checkpoint_key(trace_dir: Path, origin: float, scale: GuestScale) -> str:
    """What the checkpoint depends on: the trace files, the window's start, the guests' scale and
    how it is trained."""
    from presculpt.coordinator.forecast import nextstep
    from presculpt.coordinator.forecast.lstm.predictor import FEATURES, FORMAT_VERSION

    parts = {"origin": origin, "scale": scale.__dict__, "own_memory": GUEST_OWN_MEMORY_MIB, "train_days": TRAIN_DAYS, "validation_days": VALIDATION_DAYS, "hidden": HIDDEN,
             "head_hidden": HEAD_HIDDEN, "epochs": EPOCHS, "samples": SAMPLES_PER_EPOCH,
             "format": FORMAT_VERSION, "features": FEATURES, "next_step": nextstep.FEATURES,
             "next_steps": [dataclasses.asdict(c) for c in nextstep.DEFAULT_CONFIGS]}
    for name in ("vms.csv", "usage.csv.gz"):
        stat = (trace_dir / name).stat()
        parts[name] = [stat.st_size, int(stat.st_mtime)]
    parts["trace"] = str(trace_dir.resolve())
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_path(cache_dir: Path, trace_dir: Path, origin: float, scale: GuestScale) -> Path:
    return cache_dir / "demo" / f"forecaster-{checkpoint_key(trace_dir, origin, scale)}.pt"


def demo_checkpoint(trace_dir: Path, traces: dict[str, VmTrace], origin: float, scale: GuestScale,
                    cache_dir: Path) -> Path:
    """The cached checkpoint for this trace, window and scale, trained first when there is none."""
    path = checkpoint_path(cache_dir, trace_dir, origin, scale)
    if path.exists():
        log.info("forecaster: the cached model %s", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    forecaster, meta = train(traces, origin, scale)
    tmp = path.with_suffix(".tmp.pt")
    forecaster.save(tmp)
    tmp.replace(path)
    log.info("forecaster: trained on %d windows in %.0f s, cached as %s", meta["train_windows"],
             meta["train_seconds"], path)
    return path


def training_series(traces: dict[str, VmTrace], origin: float, scale: GuestScale, days: float = TRAIN_DAYS) -> list:
    """Every VM's CPU and memory over the ``days`` before ``origin`` at the guest's scale, where it
    has at least half of that history."""
    from presculpt.coordinator.forecast.evaluate import Series

    start = origin - days * 86400
    wanted = int(days * 86400 / GRID_S)
    out = []
    for vm_id, t in sorted(traces.items()):
        ts = np.asarray(t.ts)
        first, last = int(np.searchsorted(ts, start)), int(np.searchsorted(ts, origin))
        if last - first < wanted // 2:
            continue
        cores, held = guest_arrays(t, scale)
        out.append(Series(f"{vm_id}/cpu_cores", "cpu_cores", cores[first:last], float(ts[first]),
                          float(scale.max_vcpus), last - first))
        known = ~np.isnan(np.asarray(t.mem_mib, dtype=np.float64)[first:last])
        if t.max_mem_mib and known.sum() > len(known) // 2:
            used = GUEST_OWN_MEMORY_MIB + held[first:last]
            out.append(Series(f"{vm_id}/memory_mib", "memory_mib", used, float(ts[first]),
                              float(scale.max_memory_mib), last - first))
    return out


def train(traces: dict[str, VmTrace], origin: float, scale: GuestScale):
    """Train and calibrate the small LSTM on the history before ``origin``."""
    import torch

    from presculpt.coordinator.forecast.evaluate import train_lstm
    from presculpt.coordinator.forecast.lstm.module import ModelConfig
    from presculpt.coordinator.forecast.lstm.training import TrainConfig

    series = training_series(traces, origin, scale)
    log.info("forecaster: training a small LSTM on %d series of the %g days before the window (once; cached)",
             len(series), TRAIN_DAYS)
    started = time.monotonic()
    threads = torch.get_num_threads()
    try:
        forecaster, meta = train_lstm(series, ModelConfig(hidden=HIDDEN, head_hidden=HEAD_HIDDEN),
                                      TrainConfig(epochs=EPOCHS, samples_per_epoch=SAMPLES_PER_EPOCH, patience=2,
                                                  threads=THREADS),
                                      validation_days=VALIDATION_DAYS)
    finally:
        torch.set_num_threads(threads)
    meta = {**meta, "train_seconds": time.monotonic() - started, "window_end": origin, "series": len(series)}
    forecaster.metadata.update(meta)
    return forecaster, meta
