"""The embedded metric store: one SQLite file in WAL mode, no server to run.

Writes go through ONE writer thread that owns the write connection. Batches queued while it commits
are stored together in the next transaction (group commit): each batch inside its own savepoint, so
a bad batch is rolled back alone and a good one is stored whole; one fsync (synchronous=FULL)
covers the group, and every batch's future resolves only after that commit. Readers use their own
connections (one per thread); WAL lets them read while the writer writes.

Samples have one B-tree only, keyed by (vm, ts): no index on time alone, which would double the
work of every insert. Roll-ups and retention walk it per VM instead (``vm_id IN (every VM)`` with a
time range, which SQLite answers with one range seek per VM).

Deduplication: each host row keeps the highest batch ``seq`` stored, updated in the same transaction
as the batch's samples; a batch at or below it is a resend and is acknowledged without storing.
"""

from __future__ import annotations

import json
from array import array
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from presculpt.coordinator.config import StoreConfig
from presculpt.coordinator.model import (
    ROLLUP_METRICS,
    BatchStored,
    ForecastRecord,
    HostRecord,
    HostSampleRow,
    MetricBatch,
    RollupRow,
    SampleRow,
    Stat,
    VmRecord,
)
from presculpt.coordinator.store.base import BatchRejected, StoreError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    id TEXT PRIMARY KEY, hostname TEXT NOT NULL, uri TEXT NOT NULL, cpus INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL, hypervisor TEXT NOT NULL, libvirt_version TEXT NOT NULL,
    last_seen REAL NOT NULL, last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS vms (
    id INTEGER PRIMARY KEY, host TEXT NOT NULL REFERENCES hosts(id), uuid TEXT NOT NULL,
    name TEXT NOT NULL, state TEXT NOT NULL, vcpus INTEGER NOT NULL, max_vcpus INTEGER NOT NULL,
    cpu_quota_cores REAL, memory_mib INTEGER NOT NULL, max_memory_mib INTEGER NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}', present INTEGER NOT NULL DEFAULT 1,
    UNIQUE (host, uuid)
);
CREATE TABLE IF NOT EXISTS samples (
    vm_id INTEGER NOT NULL, ts REAL NOT NULL, interval_s REAL NOT NULL, cpu_cores REAL NOT NULL,
    vcpus INTEGER NOT NULL, cpu_quota_cores REAL, memory_mib INTEGER NOT NULL,
    memory_used_mib REAL, memory_available_mib REAL, disk_read_bps REAL NOT NULL,
    disk_write_bps REAL NOT NULL, net_rx_bps REAL NOT NULL, net_tx_bps REAL NOT NULL,
    PRIMARY KEY (vm_id, ts)
) WITHOUT ROWID;
DROP INDEX IF EXISTS samples_ts;  -- of early development stores: see the module docstring
CREATE TABLE IF NOT EXISTS host_samples (
    host TEXT NOT NULL, ts REAL NOT NULL, cpu_count INTEGER NOT NULL, cpu_used_cores REAL NOT NULL,
    memory_total_mib REAL NOT NULL, memory_used_mib REAL NOT NULL,
    memory_available_mib REAL NOT NULL, load1 REAL NOT NULL,
    PRIMARY KEY (host, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS host_samples_ts ON host_samples (ts);
CREATE TABLE IF NOT EXISTS rollups (
    vm_id INTEGER NOT NULL, start REAL NOT NULL, duration_s REAL NOT NULL, count INTEGER NOT NULL,
    {rollup_columns},
    PRIMARY KEY (vm_id, start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollups_start ON rollups (start);
CREATE TABLE IF NOT EXISTS rollup_dirty (start REAL PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS forecasts (
    vm_id INTEGER NOT NULL, metric TEXT NOT NULL, origin REAL NOT NULL, step_s REAL NOT NULL,
    model TEXT NOT NULL, cold_start INTEGER NOT NULL, quantiles TEXT NOT NULL,
    horizon INTEGER NOT NULL, data BLOB NOT NULL,  -- horizon x len(quantiles) doubles, row-major
    PRIMARY KEY (vm_id, metric, origin)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS forecasts_origin ON forecasts (origin);
""".replace(
    "{rollup_columns}",
    ", ".join(f"{m}_{agg} REAL" for m in ROLLUP_METRICS for agg in ("min", "mean", "max")),
)

SAMPLE_COLUMNS = (
    "ts, interval_s, cpu_cores, vcpus, cpu_quota_cores, memory_mib, memory_used_mib, "
    "memory_available_mib, disk_read_bps, disk_write_bps, net_rx_bps, net_tx_bps"
)
INSERT_SAMPLE = f"INSERT OR REPLACE INTO samples (vm_id, {SAMPLE_COLUMNS}) VALUES ({', '.join('?' * 13)})"
INSERT_HOST_SAMPLE = (
    "INSERT OR REPLACE INTO host_samples (host, ts, cpu_count, cpu_used_cores, memory_total_mib, "
    "memory_used_mib, memory_available_mib, load1) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
ROLLUP_SELECT = ", ".join(
    f"min({m}), avg({m}), max({m})" for m in ROLLUP_METRICS
)
WATERMARK_KEY = "rollup_watermark"
# The oldest sample, by one seek per VM (samples have no index on time alone).
OLDEST_SAMPLE = "SELECT min((SELECT min(ts) FROM samples WHERE vm_id = v.id)) FROM vms v"
RETENTION_CHUNK_S = 600.0  # delete raw samples ten minutes of data per transaction
_STOP = object()


@dataclass
class _BatchJob:
    batch: MetricBatch
    future: Future


@dataclass
class _CallJob:
    func: Callable[[sqlite3.Connection], Any]
    future: Future


def _forecast_record(host: str, uuid: str, metric: str, origin: float, step_s: float, model: str, cold: int,
                     quantiles: str, horizon: int, data: bytes) -> ForecastRecord:
    levels = tuple(json.loads(quantiles))
    flat = array("d")
    flat.frombytes(data)
    width = len(levels)
    values = tuple(tuple(flat[h * width:(h + 1) * width]) for h in range(horizon))
    return ForecastRecord(host, uuid, metric, origin, step_s, model, bool(cold), levels, values)


def _vm_row_to_record(row: sqlite3.Row | tuple) -> VmRecord:
    host, uuid, name, state, vcpus, max_vcpus, quota, memory, max_memory, metadata = row
    return VmRecord(host=host, uuid=uuid, name=name, state=state, vcpus=vcpus, max_vcpus=max_vcpus,
                    cpu_quota_cores=quota, memory_mib=memory, max_memory_mib=max_memory,
                    metadata=json.loads(metadata))


class SqliteMetricStore:
    """:class:`~presculpt.coordinator.store.base.MetricStore` in one SQLite file (WAL)."""

    def __init__(self, path: str | Path, config: StoreConfig = StoreConfig()):
        self.path = str(path)
        self.config = config
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        # Held to enqueue a job and to stop: no job lands behind the writer's stop marker, where
        # nothing would ever run it and its caller would wait for good.
        self._enqueue_lock = threading.Lock()
        self._write: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # Owned by the writer thread after start():
        self._last_seq: dict[str, int] = {}
        self._vm_ids: dict[str, dict[str, int]] = {}  # host -> uuid -> vm id, present VMs only
        self._watermark = 0.0

    # -- lifecycle -----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.config.synchronous}")
            conn.execute("PRAGMA busy_timeout=10000")
        except sqlite3.Error as err:
            raise StoreError(f"cannot open the store {self.path}: {err}") from None
        return conn

    def start(self) -> None:
        """Open the file (creating the schema) and start the writer thread."""
        if self._thread is not None:
            return
        conn = self._connect()
        try:
            conn.executescript(SCHEMA)
        except sqlite3.Error as err:
            conn.close()
            raise StoreError(f"cannot create the schema in {self.path}: {err}") from None
        self._write = conn
        self._last_seq = dict(conn.execute("SELECT id, last_seq FROM hosts").fetchall())
        self._vm_ids = {}
        for vm_id, host, uuid in conn.execute("SELECT id, host, uuid FROM vms WHERE present = 1"):
            self._vm_ids.setdefault(host, {})[uuid] = vm_id
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (WATERMARK_KEY,)).fetchone()
        self._watermark = float(row[0]) if row else 0.0
        self._thread = threading.Thread(target=self._writer_loop, name="store-writer", daemon=True)
        self._thread.start()
        log.info("store %s open (WAL, synchronous=%s)", self.path, self.config.synchronous)

    def stop(self) -> None:
        """Finish queued writes, stop the writer and close every connection."""
        with self._enqueue_lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._queue.put(_STOP)  # after every job already queued, which the writer finishes first
        thread.join()
        assert self._write is not None
        try:
            self._write.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as err:
            log.warning("final checkpoint of %s failed: %s", self.path, err)
        self._write.close()
        self._write = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()

    # -- the writer thread ---------------------------------------------------------------
    def _writer_loop(self) -> None:
        pending: Any = None
        while True:
            item = pending if pending is not None else self._queue.get()
            pending = None
            if item is _STOP:
                return
            if isinstance(item, _CallJob):
                self._run_call(item)
                continue
            group = [item]
            samples = len(item.batch.samples)
            while len(group) < self.config.max_group_batches and samples < self.config.max_group_samples:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(nxt, _BatchJob):
                    pending = nxt
                    break
                group.append(nxt)
                samples += len(nxt.batch.samples)
            self._commit_group(group)

    def _run_call(self, job: _CallJob) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        conn = self._write
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = job.func(conn)
            conn.execute("COMMIT")
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            job.future.set_exception(err if not isinstance(err, sqlite3.Error) else StoreError(str(err)))
            return
        job.future.set_result(result)

    def _commit_group(self, group: list[_BatchJob]) -> None:
        conn = self._write
        assert conn is not None
        results: list[tuple[_BatchJob, Any]] = []
        seqs: dict[str, int] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in group:
                results.append((job, self._store_one(conn, job.batch, seqs)))
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.error("store commit of %d batches failed: %s", len(group), err)
            for job in group:
                job.future.set_exception(StoreError(f"store commit failed: {err}"))
            return
        self._last_seq.update(seqs)
        for job, result in results:
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def _store_one(self, conn: sqlite3.Connection, batch: MetricBatch, seqs: dict[str, int]) -> Any:
        agent = batch.agent_id
        last = seqs.get(agent, self._last_seq.get(agent))
        if last is None:
            return BatchRejected(f"unknown host {agent!r}: send a hello with the inventory first")
        if batch.seq <= last:
            return BatchStored(agent, batch.seq, 0, duplicate=True)
        ids = self._vm_ids.get(agent, {})
        try:
            rows = [(ids[s[0]], *s[1:]) for s in batch.samples]
        except KeyError as err:
            return BatchRejected(
                f"host {agent!r} reported VM {err.args[0]!r}, which is not in its inventory; "
                f"batch {batch.seq} not stored"
            )
        conn.execute("SAVEPOINT batch")
        try:
            conn.executemany(INSERT_SAMPLE, rows)
            if batch.host_sample is not None:
                conn.execute(INSERT_HOST_SAMPLE, (agent, *batch.host_sample))
            conn.execute("UPDATE hosts SET last_seq = ?, last_seen = ? WHERE id = ?",
                         (batch.seq, time.time(), agent))
            if rows and self._watermark:
                late = {self._bucket(s[1]) for s in batch.samples if s[1] < self._watermark}
                if late:
                    conn.executemany("INSERT OR IGNORE INTO rollup_dirty (start) VALUES (?)",
                                     [(b,) for b in late])
            conn.execute("RELEASE batch")
        except sqlite3.IntegrityError as err:
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            return BatchRejected(f"batch {batch.seq} of {agent!r} is inconsistent: {err}")
        seqs[agent] = batch.seq
        return BatchStored(agent, batch.seq, len(rows))

    def _call(self, func: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``func(conn)`` in one transaction on the writer thread and wait for its result."""
        future: Future = Future()
        self._enqueue(_CallJob(func, future))
        return future.result()

    def _enqueue(self, job: _BatchJob | _CallJob) -> None:
        """Queue ``job`` for the writer; while the store is not running (not started, or stopping or
        stopped) its future fails at once instead."""
        with self._enqueue_lock:
            if self._thread is not None:
                self._queue.put(job)
                return
        job.future.set_exception(StoreError("the store is not running (not started, or stopped)"))

    # -- writes --------------------------------------------------------------------------
    def submit_batch(self, batch: MetricBatch) -> Future:
        future: Future = Future()
        self._enqueue(_BatchJob(batch, future))
        return future

    def store_batch(self, batch: MetricBatch) -> BatchStored:
        return self.submit_batch(batch).result()

    def upsert_inventory(self, host: HostRecord, vms: Sequence[VmRecord]) -> None:
        def write(conn: sqlite3.Connection) -> dict[str, int]:
            conn.execute(
                "INSERT INTO hosts (id, hostname, uri, cpus, memory_mib, hypervisor, libvirt_version, "
                "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "hostname = excluded.hostname, uri = excluded.uri, cpus = excluded.cpus, "
                "memory_mib = excluded.memory_mib, hypervisor = excluded.hypervisor, "
                "libvirt_version = excluded.libvirt_version, last_seen = excluded.last_seen",
                (host.id, host.hostname, host.uri, host.cpus, host.memory_mib, host.hypervisor,
                 host.libvirt_version, host.last_seen or time.time()),
            )
            conn.execute("UPDATE vms SET present = 0 WHERE host = ?", (host.id,))
            conn.executemany(
                "INSERT INTO vms (host, uuid, name, state, vcpus, max_vcpus, cpu_quota_cores, "
                "memory_mib, max_memory_mib, metadata, present) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (host, uuid) DO UPDATE SET name = excluded.name, state = excluded.state, "
                "vcpus = excluded.vcpus, max_vcpus = excluded.max_vcpus, "
                "cpu_quota_cores = excluded.cpu_quota_cores, memory_mib = excluded.memory_mib, "
                "max_memory_mib = excluded.max_memory_mib, metadata = excluded.metadata, present = 1",
                [(host.id, v.uuid, v.name, v.state, v.vcpus, v.max_vcpus, v.cpu_quota_cores,
                  v.memory_mib, v.max_memory_mib, json.dumps(v.metadata, sort_keys=True)) for v in vms],
            )
            rows = conn.execute("SELECT uuid, id FROM vms WHERE host = ? AND present = 1", (host.id,))
            return dict(rows.fetchall())

        def apply(conn: sqlite3.Connection) -> None:
            ids = write(conn)
            # Runs on the writer thread: the caches it owns change with the transaction. If the
            # commit failed the next start() reloads them from the file.
            self._vm_ids[host.id] = ids
            self._last_seq.setdefault(host.id, 0)

        self._call(apply)

    def import_rollups(self, host: str, rows: Sequence[RollupRow]) -> int:
        none = Stat(None, None, None)

        def write(conn: sqlite3.Connection) -> int:
            ids = dict(conn.execute("SELECT uuid, id FROM vms WHERE host = ? AND present = 1", (host,)))
            values = []
            for r in rows:
                if r.uuid not in ids:
                    raise StoreError(f"VM {r.uuid} is not in host {host!r}'s inventory; no roll-ups imported")
                stats = [r.stats.get(m, none) for m in ROLLUP_METRICS]
                values.append((ids[r.uuid], r.start, r.duration_s, r.count,
                               *(v for s in stats for v in (s.min, s.mean, s.max))))
            width = 4 + 3 * len(ROLLUP_METRICS)
            conn.executemany(f"INSERT OR REPLACE INTO rollups VALUES ({', '.join('?' * width)})", values)
            return len(values)

        return self._call(write)

    # -- reads ---------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as err:
            raise StoreError(f"store read failed: {err}") from None

    def last_seq(self, agent_id: str) -> int:
        rows = self._read("SELECT last_seq FROM hosts WHERE id = ?", (agent_id,))
        return int(rows[0][0]) if rows else 0

    def hosts(self) -> list[HostRecord]:
        rows = self._read(
            "SELECT id, hostname, uri, cpus, memory_mib, hypervisor, libvirt_version, last_seen "
            "FROM hosts ORDER BY id"
        )
        return [HostRecord(*row) for row in rows]

    def vms(self, host: str | None = None) -> list[VmRecord]:
        where, params = ("AND host = ?", (host,)) if host else ("", ())
        rows = self._read(
            "SELECT host, uuid, name, state, vcpus, max_vcpus, cpu_quota_cores, memory_mib, "
            f"max_memory_mib, metadata FROM vms WHERE present = 1 {where} ORDER BY host, name",
            params,
        )
        return [_vm_row_to_record(row) for row in rows]

    def latest_samples(self, host: str | None = None) -> dict[tuple[str, str], SampleRow]:
        where, params = ("AND v.host = ?", (host,)) if host else ("", ())
        rows = self._read(
            f"SELECT v.host, v.uuid, {', '.join('s.' + c.strip() for c in SAMPLE_COLUMNS.split(','))} "
            "FROM vms v JOIN samples s ON s.vm_id = v.id "
            f"WHERE v.present = 1 {where} AND s.ts = (SELECT max(ts) FROM samples WHERE vm_id = v.id)",
            params,
        )
        return {(row[0], row[1]): SampleRow(*row[1:]) for row in rows}

    def latest_host_samples(self) -> dict[str, HostSampleRow]:
        rows = self._read(
            "SELECT h.id, s.ts, s.cpu_count, s.cpu_used_cores, s.memory_total_mib, s.memory_used_mib, "
            "s.memory_available_mib, s.load1 FROM hosts h JOIN host_samples s ON s.host = h.id "
            "AND s.ts = (SELECT max(ts) FROM host_samples WHERE host = h.id)"
        )
        return {row[0]: HostSampleRow(*row[1:]) for row in rows}

    def samples(self, host: str, uuid: str, start: float, end: float, limit: int = 0) -> list[SampleRow]:
        rows = self._read(
            f"SELECT v.uuid, {', '.join('s.' + c.strip() for c in SAMPLE_COLUMNS.split(','))} "
            "FROM vms v JOIN samples s ON s.vm_id = v.id "
            "WHERE v.host = ? AND v.uuid = ? AND s.ts >= ? AND s.ts < ? ORDER BY s.ts"
            + (" LIMIT ?" if limit > 0 else ""),
            (host, uuid, start, end, *((limit,) if limit > 0 else ())),
        )
        return [SampleRow(*row) for row in rows]

    def rollups(self, host: str, uuid: str, start: float, end: float) -> list[RollupRow]:
        rows = self._read(
            "SELECT r.* FROM vms v JOIN rollups r ON r.vm_id = v.id "
            "WHERE v.host = ? AND v.uuid = ? AND r.start >= ? AND r.start < ? ORDER BY r.start",
            (host, uuid, start, end),
        )
        out = []
        for row in rows:
            _vm_id, bucket, duration, count, *values = row
            stats = {m: Stat(*values[3 * i: 3 * i + 3]) for i, m in enumerate(ROLLUP_METRICS)}
            out.append(RollupRow(uuid=uuid, start=bucket, duration_s=duration, count=count, stats=stats))
        return out

    def rollup_means(self, metrics: Sequence[str], start: float, end: float
                     ) -> dict[tuple[str, str], list[tuple[float, ...]]]:
        """Every present VM's bucket means of ``metrics`` with ``start <= bucket < end``, in one
        scan: ``{(host, uuid): [(bucket_start, mean_1, mean_2, ...), ...]}`` oldest first."""
        unknown = [m for m in metrics if m not in ROLLUP_METRICS]
        if unknown:
            raise ValueError(f"no roll-up of {unknown[0]!r}")
        columns = ", ".join(f"r.{m}_mean" for m in metrics)
        rows = self._read(
            f"SELECT v.host, v.uuid, r.start, {columns} FROM vms v JOIN rollups r ON r.vm_id = v.id "
            "WHERE v.present = 1 AND r.start >= ? AND r.start < ? ORDER BY v.id, r.start",
            (start, end),
        )
        out: dict[tuple[str, str], list[tuple[float, ...]]] = {}
        for host, uuid, *values in rows:
            out.setdefault((host, uuid), []).append(tuple(values))
        return out

    def rollup_peaks(self, metric: str, start: float, end: float) -> dict[tuple[str, str], float]:
        """Every present VM's highest bucket mean of ``metric`` with ``start <= bucket < end``."""
        if metric not in ROLLUP_METRICS:
            raise ValueError(f"no roll-up of {metric!r}")
        rows = self._read(
            f"SELECT v.host, v.uuid, max(r.{metric}_mean) FROM vms v JOIN rollups r ON r.vm_id = v.id "
            "WHERE v.present = 1 AND r.start >= ? AND r.start < ? GROUP BY v.id",
            (start, end),
        )
        return {(host, uuid): peak for host, uuid, peak in rows if peak is not None}

    def store_forecasts(self, records: Sequence[ForecastRecord]) -> int:
        """Store forecasts (replacing any of the same VM, metric and origin); VMs unknown to the
        store are skipped. Returns the number stored."""

        def write(conn: sqlite3.Connection) -> int:
            ids = dict(((h, u), i) for i, h, u in conn.execute("SELECT id, host, uuid FROM vms"))
            rows = []
            for r in records:
                vm_id = ids.get((r.host, r.uuid))
                if vm_id is None:
                    continue
                flat = array("d", (v for step in r.values for v in step))
                rows.append((vm_id, r.metric, r.origin, r.step_s, r.model, int(r.cold_start),
                             json.dumps(list(r.quantiles)), len(r.values), flat.tobytes()))
            conn.executemany("INSERT OR REPLACE INTO forecasts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            return len(rows)

        return self._call(write)

    def forecasts(self, host: str, uuid: str, metric: str, start: float, end: float) -> list[ForecastRecord]:
        """Forecasts of one VM metric with ``start <= origin < end``, oldest first."""
        rows = self._read(
            "SELECT f.origin, f.step_s, f.model, f.cold_start, f.quantiles, f.horizon, f.data "
            "FROM vms v JOIN forecasts f ON f.vm_id = v.id "
            "WHERE v.host = ? AND v.uuid = ? AND f.metric = ? AND f.origin >= ? AND f.origin < ? "
            "ORDER BY f.origin",
            (host, uuid, metric, start, end),
        )
        return [_forecast_record(host, uuid, metric, *row) for row in rows]

    def latest_forecasts(self, start: float, end: float) -> list[ForecastRecord]:
        """The newest forecast of every present VM and metric with ``start <= origin < end``, in one
        query (one primary-key seek per VM and metric for the newest origin)."""
        rows = self._read(
            "SELECT v.host, v.uuid, f.metric, f.origin, f.step_s, f.model, f.cold_start, f.quantiles, f.horizon, "
            "f.data FROM forecasts f JOIN vms v ON v.id = f.vm_id "
            "WHERE v.present = 1 AND f.origin >= ? AND f.origin < ? AND f.origin = ("
            "SELECT max(origin) FROM forecasts WHERE vm_id = f.vm_id AND metric = f.metric "
            "AND origin >= ? AND origin < ?) ORDER BY v.host, v.uuid, f.metric",
            (start, end, start, end),
        )
        return [_forecast_record(*row) for row in rows]

    def count_samples(self) -> int:
        return int(self._read("SELECT count(*) FROM samples")[0][0])

    # -- maintenance ---------------------------------------------------------------------
    def _bucket(self, ts: float) -> float:
        size = self.config.rollup_bucket_s
        return math.floor(ts / size) * size

    def _rollup_range(self, conn: sqlite3.Connection, lo: float, hi: float) -> int:
        size = self.config.rollup_bucket_s
        cur = conn.execute(
            f"INSERT OR REPLACE INTO rollups SELECT vm_id, CAST(ts / ? AS INTEGER) * ? AS bucket, ?, "
            f"count(*), {ROLLUP_SELECT} FROM samples WHERE vm_id IN (SELECT id FROM vms) AND ts >= ? AND ts < ? "
            "GROUP BY vm_id, bucket",
            (size, size, size, lo, hi),
        )
        return max(cur.rowcount, 0)

    def compute_rollups(self, now: float) -> int:
        size = self.config.rollup_bucket_s
        hi = self._bucket(now - self.config.rollup_settle_s)

        def roll(conn: sqlite3.Connection) -> int:
            written = 0
            lo = self._watermark
            if not lo:
                first = conn.execute(OLDEST_SAMPLE).fetchone()[0]
                if first is None:
                    return 0
                lo = self._bucket(first)
            dirty = [r[0] for r in conn.execute("SELECT start FROM rollup_dirty WHERE start < ?", (lo,))]
            for bucket in dirty:
                written += self._rollup_range(conn, bucket, bucket + size)
            conn.execute("DELETE FROM rollup_dirty WHERE start < ?", (lo,))
            if hi > lo:
                written += self._rollup_range(conn, lo, hi)
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (WATERMARK_KEY, hi))
                self._watermark = hi
            return written

        written = self._call(roll)
        if written:
            log.info("rolled up %d VM-buckets of %g s", written, size)
        return written

    def apply_retention(self, now: float) -> int:
        cfg = self.config
        # Raw samples go only once they are rolled up (below the watermark).
        raw_cutoff = now - cfg.raw_retention_s
        deleted = 0

        def oldest(conn: sqlite3.Connection) -> float | None:
            return conn.execute(OLDEST_SAMPLE).fetchone()[0]

        first = self._call(oldest)
        cutoff = min(raw_cutoff, self._watermark)
        if first is not None:
            step = first
            while step < cutoff:  # in chunks, so ingestion interleaves with the deletion
                step = min(step + RETENTION_CHUNK_S, cutoff)
                deleted += self._call(
                    lambda conn, t=step: conn.execute(
                        "DELETE FROM samples WHERE vm_id IN (SELECT id FROM vms) AND ts < ?", (t,)).rowcount
                )
        deleted += self._call(
            lambda conn: conn.execute("DELETE FROM host_samples WHERE ts < ?", (raw_cutoff,)).rowcount
        )
        deleted += self._call(
            lambda conn: conn.execute(
                "DELETE FROM rollups WHERE start < ?", (now - cfg.rollup_retention_s,)
            ).rowcount
        )
        deleted += self._call(
            lambda conn: conn.execute(
                "DELETE FROM forecasts WHERE origin < ?", (now - cfg.forecast_retention_s,)
            ).rowcount
        )
        if deleted:
            log.info("retention deleted %d rows", deleted)
        return deleted
