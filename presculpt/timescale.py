"""A clock whose time runs faster than the wall clock: how the demo replays hours of a trace in minutes.

The coordinator, the forecaster, the planner and the agent's sample timestamps all read time from a
``clock`` passed in (``time.time`` in production). The demo passes a :class:`ScaledClock` instead:
it reads ``origin`` (a Unix time inside the trace) until :meth:`ScaledClock.start`, then advances
``speedup`` times faster than the wall clock. Everything that thinks in 5-minute steps (roll-ups,
forecasts, the planner's steps, hold times and cooldowns) keeps its production meaning, in trace
time; only the intervals the scheduler waits between jobs are wall seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class ScaledClock:
    """Trace time: ``origin`` until started, then ``origin + speedup * (wall seconds since start)``.

    Callable like ``time.time``; safe to read from any thread.
    """

    def __init__(self, origin: float, speedup: float, wall: Callable[[], float] = time.monotonic):
        if not speedup > 0:
            raise ValueError(f"speedup must be positive, got {speedup}")
        self.origin = float(origin)
        self.speedup = float(speedup)
        self._wall = wall
        self._started_at: float | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Let time run from ``origin`` on (idempotent)."""
        with self._lock:
            if self._started_at is None:
                self._started_at = self._wall()

    @property
    def started(self) -> bool:
        return self._started_at is not None

    def __call__(self) -> float:
        started = self._started_at
        if started is None:
            return self.origin
        return self.origin + (self._wall() - started) * self.speedup

    def wall_seconds(self, trace_seconds: float) -> float:
        """How long ``trace_seconds`` of trace time take on the wall clock."""
        return trace_seconds / self.speedup

    def wall_until(self, trace_time: float) -> float:
        """Wall seconds from now until the clock reads ``trace_time`` (negative: already past;
        infinite before the clock started)."""
        if self._started_at is None:
            return float("inf") if trace_time > self.origin else 0.0
        return (trace_time - self()) / self.speedup
