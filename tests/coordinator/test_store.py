"""SqliteMetricStore: atomic batches, deduplication, roll-ups, retention, durability across reopen."""

from __future__ import annotations

import threading
import time

import pytest

from presculpt.coordinator.config import StoreConfig
from presculpt.coordinator.model import (
    HostRecord,
    HostSampleRow,
    MetricBatch,
    RollupRow,
    SampleRow,
    Stat,
    VmRecord,
)
from presculpt.coordinator.store.base import BatchRejected, MetricStore, StoreError
from presculpt.coordinator.store.sqlite import SqliteMetricStore

HOST = HostRecord(id="h1", hostname="h1", uri="test:///default", cpus=8, memory_mib=32768)


def vm(uuid: str, name: str, host: str = "h1") -> VmRecord:
    return VmRecord(host=host, uuid=uuid, name=name, state="running", vcpus=1, max_vcpus=4,
                    cpu_quota_cores=None, memory_mib=1024, max_memory_mib=2048)


def sample(uuid: str, ts: float, cpu: float = 0.5) -> SampleRow:
    return SampleRow(uuid, ts, 1.0, cpu, 1, None, 1024, 300.0, 900.0, 0.0, 10.0, 1.0, 2.0)


def batch(seq: int, *samples: SampleRow, agent: str = "h1") -> MetricBatch:
    return MetricBatch(agent, seq, tuple(samples), HostSampleRow(samples[0].ts if samples else 0, 8, 1, 32768, 1000, 31768, 0.1))


@pytest.fixture
def store(tmp_path):
    s = SqliteMetricStore(tmp_path / "m.db", StoreConfig(rollup_bucket_s=300, rollup_settle_s=0,
                                                          raw_retention_s=3600))
    s.start()
    s.upsert_inventory(HOST, [vm("u-a", "a"), vm("u-b", "b")])
    yield s
    s.stop()


def test_is_a_metric_store(store):
    assert isinstance(store, MetricStore)


def test_batch_is_stored_and_read_back(store):
    result = store.store_batch(batch(1, sample("u-a", 100.0), sample("u-b", 100.0)))
    assert result.samples == 2 and not result.duplicate
    assert [s.ts for s in store.samples("h1", "u-a", 0, 1e9)] == [100.0]
    assert store.last_seq("h1") == 1
    latest = store.latest_samples()
    assert set(latest) == {("h1", "u-a"), ("h1", "u-b")}
    assert store.latest_host_samples()["h1"].cpu_count == 8


def test_resent_batch_is_not_stored_twice(store):
    store.store_batch(batch(1, sample("u-a", 100.0)))
    again = store.store_batch(batch(1, sample("u-a", 100.0), sample("u-a", 101.0)))
    assert again.duplicate and again.samples == 0
    assert store.count_samples() == 1


def test_batch_naming_a_foreign_vm_is_rejected_whole(store):
    with pytest.raises(BatchRejected, match="not in its inventory"):
        store.store_batch(batch(1, sample("u-a", 100.0), sample("u-zzz", 100.0)))
    assert store.count_samples() == 0
    assert store.last_seq("h1") == 0
    # The next good batch is stored: the rejection did not poison the transaction.
    store.store_batch(batch(1, sample("u-a", 100.0)))
    assert store.count_samples() == 1


def test_unknown_host_is_rejected(store):
    with pytest.raises(BatchRejected, match="unknown host"):
        store.store_batch(batch(1, sample("u-a", 1.0), agent="nobody"))


def test_group_commit_keeps_good_batches_and_drops_bad_ones(store):
    futures = [store.submit_batch(batch(seq, sample("u-a", float(seq)))) for seq in range(1, 200)]
    bad = store.submit_batch(batch(500, sample("u-x", 1.0)))
    futures += [store.submit_batch(batch(seq, sample("u-b", float(seq)))) for seq in range(200, 300)]
    assert all(not f.result().duplicate for f in futures)
    with pytest.raises(BatchRejected):
        bad.result()
    assert store.count_samples() == 299
    assert store.last_seq("h1") == 299


def test_vm_removed_from_inventory_is_refused(store):
    store.upsert_inventory(HOST, [vm("u-a", "a")])
    assert [v.name for v in store.vms()] == ["a"]
    with pytest.raises(BatchRejected):
        store.store_batch(batch(1, sample("u-b", 1.0)))


def test_durable_across_reopen(tmp_path):
    path = tmp_path / "m.db"
    s = SqliteMetricStore(path)
    s.start()
    s.upsert_inventory(HOST, [vm("u-a", "a")])
    s.store_batch(batch(7, sample("u-a", 1.0)))
    s.stop()
    s = SqliteMetricStore(path)
    s.start()
    try:
        assert s.last_seq("h1") == 7
        assert s.store_batch(batch(7, sample("u-a", 1.0))).duplicate
        assert s.store_batch(batch(8, sample("u-a", 2.0))).samples == 1
        assert s.count_samples() == 2
    finally:
        s.stop()


def test_rollups_min_mean_max(store):
    store.store_batch(batch(1, sample("u-a", 0.0, cpu=1.0), sample("u-b", 0.0)))
    store.store_batch(batch(2, sample("u-a", 100.0, cpu=3.0)))
    store.store_batch(batch(3, sample("u-a", 400.0, cpu=5.0)))
    assert store.compute_rollups(now=610.0) == 3  # buckets [0,300) x2 VMs and [300,600) x1
    (first, second) = store.rollups("h1", "u-a", 0, 1e9)
    assert first.start == 0 and first.count == 2
    assert (first.stats["cpu_cores"].min, first.stats["cpu_cores"].mean, first.stats["cpu_cores"].max) == (1, 2, 3)
    assert second.start == 300 and second.stats["cpu_cores"].max == 5
    assert store.compute_rollups(now=610.0) == 0  # nothing new
    means = store.rollup_means(["cpu_cores", "memory_mib"], 0, 1e9)
    assert [row[:2] for row in means[("h1", "u-a")]] == [(0.0, 2.0), (300.0, 5.0)]
    assert set(means) == {("h1", "u-a"), ("h1", "u-b")}
    assert store.rollup_means(["cpu_cores"], 300, 1e9) == {("h1", "u-a"): [(300.0, 5.0)]}
    # The peak of the bucket means (2 and 5), within the span only; a VM without a bucket there is left out.
    assert store.rollup_peaks("cpu_cores", 0, 1e9)[("h1", "u-a")] == 5.0
    assert store.rollup_peaks("cpu_cores", 0, 300) == {("h1", "u-a"): 2.0, ("h1", "u-b"): pytest.approx(
        means[("h1", "u-b")][0][1])}
    assert store.rollup_peaks("cpu_cores", 300, 1e9) == {("h1", "u-a"): 5.0}
    with pytest.raises(ValueError, match="no roll-up of 'disk'"):
        store.rollup_peaks("disk", 0, 1e9)


def test_imported_history_sits_before_live_roll_ups(store):
    history = [RollupRow("u-a", 300.0 * i, 300.0, 1, {"cpu_cores": Stat(v, v, v), "memory_used_mib": Stat(9, 9, 9)})
               for i, v in enumerate((0.5, 1.5))]
    assert store.import_rollups("h1", history) == 2
    store.store_batch(batch(1, sample("u-a", 610.0, cpu=3.0)))
    assert store.compute_rollups(now=1000.0) == 1  # the live bucket only; the history is left as it is
    means = store.rollup_means(["cpu_cores", "memory_used_mib", "net_rx_bps"], 0, 1e9)[("h1", "u-a")]
    assert means == [(0.0, 0.5, 9.0, None), (300.0, 1.5, 9.0, None), (600.0, 3.0, 300.0, 1.0)]
    with pytest.raises(StoreError, match="u-x is not in host 'h1'"):
        store.import_rollups("h1", [RollupRow("u-x", 0.0, 300.0, 1, {})])


def test_late_samples_recompute_their_bucket(store):
    store.store_batch(batch(1, sample("u-a", 10.0, cpu=1.0)))
    store.compute_rollups(now=700.0)
    store.store_batch(batch(2, sample("u-a", 20.0, cpu=3.0)))  # arrives after its bucket rolled up
    store.compute_rollups(now=700.0)
    (bucket, *_rest) = store.rollups("h1", "u-a", 0, 300)
    assert bucket.count == 2 and bucket.stats["cpu_cores"].max == 3


def test_retention_keeps_what_is_not_rolled_up(store):
    store.store_batch(batch(1, sample("u-a", 0.0), sample("u-a", 8000.0)))
    # Nothing rolled up yet: raw samples stay even past retention.
    assert store.apply_retention(now=10_000.0) >= 0
    assert store.count_samples() == 2
    store.compute_rollups(now=10_000.0)
    store.apply_retention(now=10_000.0)  # raw retention 3600 s: the sample at 0 goes
    assert [s.ts for s in store.samples("h1", "u-a", 0, 1e9)] == [8000.0]
    assert len(store.rollups("h1", "u-a", 0, 1e9)) == 2  # roll-ups outlive raw samples


def test_forecasts_round_trip_and_expire(tmp_path):
    from presculpt.coordinator.config import StoreConfig
    from presculpt.coordinator.model import ForecastRecord, HostRecord, VmRecord
    from presculpt.coordinator.store.sqlite import SqliteMetricStore

    store = SqliteMetricStore(tmp_path / "f.db", StoreConfig(forecast_retention_s=3600))
    store.start()
    try:
        store.upsert_inventory(HostRecord("h", "h", "test:///", 8, 1024, "X", "9", 1.0),
                               [VmRecord("h", "u1", "vm1", "running", 1, 4, None, 512, 1024)])
        record = ForecastRecord("h", "u1", "cpu_cores", 10_000.0, 300.0, "lstm-3", False,
                                (0.1, 0.5, 0.9), ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6)))
        unknown = ForecastRecord("h", "nope", "cpu_cores", 10_000.0, 300.0, "lstm-3", False, (0.5,), ((1.0,),))
        assert store.store_forecasts([record, unknown]) == 1
        assert store.store_forecasts([record]) == 1  # the same origin again replaces, not duplicates
        assert store.forecasts("h", "u1", "cpu_cores", 0, 20_000) == [record]
        assert store.forecasts("h", "u1", "memory_mib", 0, 20_000) == []
        store.apply_retention(now=10_000.0 + 3601)
        assert store.forecasts("h", "u1", "cpu_cores", 0, 20_000) == []
    finally:
        store.stop()


def test_a_write_racing_a_stop_fails_at_once_instead_of_waiting_for_good(tmp_path):
    """A job queued while stop() waits for the writer used to land behind the stop marker, and its
    caller (the forecast job at a coordinator's exit) waited for ever. Now it fails with StoreError,
    and what was queued before the stop is still written."""
    s = SqliteMetricStore(tmp_path / "m.db")
    s.start()
    s.upsert_inventory(HOST, [vm("u-a", "a")])
    busy, release = threading.Event(), threading.Event()

    def hold(conn):
        busy.set()
        assert release.wait(300)

    holder = threading.Thread(target=s._call, args=(hold,))
    holder.start()
    assert busy.wait(60)  # the writer is busy with the held job
    queued = s.submit_batch(batch(1, sample("u-a", 100.0)))  # before the stop: written
    stopper = threading.Thread(target=s.stop)
    stopper.start()
    deadline = time.monotonic() + 60
    while s._thread is not None and time.monotonic() < deadline:  # stop() has begun, the writer still busy
        time.sleep(0.01)
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            s.upsert_inventory(HOST, [])
        except StoreError as err:
            outcome.append(err)
        else:
            outcome.append(None)

    racer = threading.Thread(target=write, daemon=True)
    racer.start()
    racer.join(60)
    assert not racer.is_alive(), "a write during stop() waited for good"
    assert isinstance(outcome[0], StoreError) and "not running" in str(outcome[0])
    release.set()
    for t in (holder, stopper):
        t.join(60)
        assert not t.is_alive()
    assert queued.result(timeout=60).samples == 1
    with pytest.raises(StoreError, match="not running"):
        s.store_batch(batch(2, sample("u-a", 400.0)))
    s.start()  # reopens: the batch queued before the stop is there
    try:
        assert [r.ts for r in s.samples("h1", "u-a", 0, 1e9)] == [100.0]
    finally:
        s.stop()
