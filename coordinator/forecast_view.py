"""What operators see of a VM's forecasts: the latest quantile forecast, and past forecasts next to
what then happened, with their accuracy. Reads the store only; the API and the CLI show it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from presculpt.coordinator.accuracy import Accuracy, tally
from presculpt.coordinator.model import ForecastRecord, VmRecord
from presculpt.coordinator.store.base import MetricStore

# Forecast metric -> the roll-up statistic it predicts (its mean over each step).
METRIC_SOURCES: dict[str, str] = {"cpu_cores": "cpu_cores", "memory_mib": "memory_used_mib"}
LATEST_LOOKBACK_S = 86400.0  # a forecast older than this is not "latest" any more


@dataclass(frozen=True)
class PastPoint:
    ts: float  # start of the target step
    metric: str
    values: tuple[float, ...]
    actual: float | None
    quantiles: tuple[float, ...] = ()  # the levels of ``values``


@dataclass(frozen=True)
class ForecastView:
    vm: VmRecord
    latest: dict[str, ForecastRecord]  # by metric
    past: list[PastPoint]
    accuracy: Accuracy  # CPU at the chosen lead, over the window
    quantiles: tuple[float, ...]
    lead_steps: int


def actuals(store: MetricStore, vm: VmRecord, metric: str, start: float, end: float) -> dict[float, float]:
    """The measured mean of ``metric`` per roll-up bucket start."""
    stat = METRIC_SOURCES[metric]
    out = {}
    for row in store.rollups(vm.host, vm.uuid, start, end):
        value = row.stats[stat].mean
        if value is not None:
            out[row.start] = value
    return out


def forecast_view(store: MetricStore, vm: VmRecord, now: float, since_s: float, lead_steps: int) -> ForecastView:
    """The view's values are at the levels every forecast it shows has (CPU forecasts carry more
    levels than memory's, and those of a VM's first days fewer), so each row lines up with
    ``quantiles``; nothing is read between levels a forecast lacks."""
    latest: dict[str, ForecastRecord] = {}
    past: list[PastPoint] = []
    accuracy = Accuracy.empty()
    shown: list[ForecastRecord] = []
    lead = lead_steps - 1
    for metric in METRIC_SOURCES:
        records = store.forecasts(vm.host, vm.uuid, metric, now - since_s - LATEST_LOOKBACK_S, now + 1)
        if not records:
            continue
        newest = records[-1]
        if newest.origin >= now - LATEST_LOOKBACK_S:
            latest[metric] = newest
            shown.append(newest)
        known = actuals(store, vm, metric, now - since_s - newest.step_s, now + 1)
        for r in records:
            ts = r.origin + lead * r.step_s
            if lead < len(r.values) and now - since_s <= ts <= now:
                past.append(PastPoint(ts, metric, r.values[lead], known.get(ts), r.quantiles))
                shown.append(r)
        if metric == "cpu_cores":
            scored = [r for r in records if now - since_s <= r.origin + lead * r.step_s <= now]
            accuracy = tally(scored, known, lead_steps).result()
    quantiles = tuple(sorted(set.intersection(*(set(r.quantiles) for r in shown)))) if shown else ()
    past = sorted((_at(p, quantiles) for p in past), key=lambda p: (p.metric, p.ts))
    latest = {m: _record_at(r, quantiles) for m, r in latest.items()}
    return ForecastView(vm, latest, past, accuracy, quantiles, lead_steps)


def _pick(values: tuple[float, ...], levels: tuple[float, ...], quantiles: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(values[levels.index(q)] for q in quantiles)


def _at(point: PastPoint, quantiles: tuple[float, ...]) -> PastPoint:
    return replace(point, values=_pick(point.values, point.quantiles, quantiles), quantiles=quantiles)


def _record_at(record: ForecastRecord, quantiles: tuple[float, ...]) -> ForecastRecord:
    if record.quantiles == quantiles:
        return record
    return replace(record, quantiles=quantiles,
                   values=tuple(_pick(tuple(row), record.quantiles, quantiles) for row in record.values))
