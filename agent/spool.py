"""A bounded, durable spool of metric batches not yet acknowledged by the coordinator.

Each batch gets the next sequence number of this agent (kept in the file, so it survives restarts)
and stays in the spool until the coordinator acknowledges that it is durable. The coordinator
stores each (agent, seq) once, so resending after a reconnect never stores a batch twice. When the
spool is full the oldest batches are dropped (they were never acknowledged, so nothing stored is
lost) and the drop is logged.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class SpoolError(Exception):
    """The spool file cannot be opened or written."""


class BatchSpool:
    """Thread-safe: the runner appends, the stream reads and acknowledges."""

    def __init__(self, path: str | Path, max_batches: int = 17_280):
        self.path = str(path)
        self.max_batches = max_batches
        self.dropped = 0
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        if self._conn is not None:
            return
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a few writes per minute: be safe
            conn.executescript(
                "CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);"
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
            )
        except (OSError, sqlite3.Error) as err:
            raise SpoolError(f"cannot open the spool {self.path}: {err}") from None
        self._conn = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolError("the spool is not open")
        return self._conn

    def _last_seq(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return int(row[0]) if row else 0

    def append(self, build: Callable[[int], bytes]) -> int:
        """Assign the next seq, store ``build(seq)`` durably; returns the seq."""
        with self._lock:
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
                seq = self._last_seq(conn) + 1
                conn.execute("INSERT INTO batches (seq, payload) VALUES (?, ?)", (seq, build(seq)))
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?)", (seq,))
                excess = conn.execute("SELECT count(*) FROM batches").fetchone()[0] - self.max_batches
                if excess > 0:
                    conn.execute("DELETE FROM batches WHERE seq IN "
                                 "(SELECT seq FROM batches ORDER BY seq LIMIT ?)", (excess,))
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise SpoolError(f"cannot write the spool {self.path}: {err}") from None
        if excess > 0:
            self.dropped += excess
            log.warning("spool full (%d batches): dropped the %d oldest unacknowledged batch(es)",
                        self.max_batches, excess)
        return seq

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Unacknowledged batches with seq > ``after_seq``, oldest first."""
        with self._lock:
            return self._db().execute(
                "SELECT seq, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()

    def ack(self, seq: int) -> None:
        """The coordinator stored batch ``seq`` (or rejected it for good): forget it."""
        with self._lock:
            self._db().execute("DELETE FROM batches WHERE seq = ?", (seq,))

    def acknowledge_through(self, seq: int) -> None:
        """Everything up to ``seq`` is stored (the coordinator's welcome says so). If the coordinator
        knows a higher seq than this spool (the spool file was lost), continue after it."""
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM batches WHERE seq <= ?", (seq,))
            if seq > self._last_seq(conn):
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?)", (seq,))
            conn.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._db().execute("SELECT count(*) FROM batches").fetchone()[0])

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._last_seq(self._db())
