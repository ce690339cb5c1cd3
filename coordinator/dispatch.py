"""Command dispatch: deliver each command to its host's agent, resend until an outcome arrives or
the deadline passes, hold commands for offline agents (bounded) and deliver them on reconnect.

Pure logic driven by the event loop: :meth:`Dispatcher.run_once` (retries and expiry) is called by
the scheduler in production and directly by tests. The send callback of a connected agent puts the
command on its stream; nothing here knows about gRPC.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from presculpt.coordinator.config import DispatchConfig
from presculpt.coordinator.model import Command, Outcome

log = logging.getLogger(__name__)

Send = Callable[[Command], None]
RECENT_COMMANDS = 1000  # finished commands remembered, so a retried command id gets its outcome


class DispatchRejected(Exception):
    """The command cannot be accepted (too many commands pending for the host, duplicate id)."""


@dataclass
class PendingCommand:
    """A command on its way: held (agent offline), sent (awaiting the outcome) or finished."""

    command: Command
    submitted_at: float
    attempts: int = 0
    last_sent: float | None = None
    outcome: Outcome | None = None
    _callbacks: list[Callable[["PendingCommand"], None]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def state(self) -> str:
        if self.outcome is not None:
            return self.outcome.status.lower()
        return "sent" if self.attempts else "held"

    def add_done_callback(self, callback: Callable[["PendingCommand"], None]) -> None:
        if self.outcome is not None:
            callback(self)
        else:
            self._callbacks.append(callback)

    def _finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)


class Dispatcher:
    """Delivers commands to agents. Not thread-safe: call it from the event loop only."""

    def __init__(self, config: DispatchConfig, clock: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock
        self._senders: dict[str, Send] = {}
        self._pending: dict[str, dict[str, PendingCommand]] = {}  # host -> id -> pending
        self._recent: OrderedDict[str, PendingCommand] = OrderedDict()

    # -- agents --------------------------------------------------------------------------
    def connect(self, host: str, send: Send) -> int:
        """An agent connected: send it every command held for it; returns how many."""
        self._senders[host] = send
        held = list(self._pending.get(host, {}).values())
        for pending in held:
            self._send(host, pending)
        if held:
            log.info("delivered %d held command(s) to %s", len(held), host)
        return len(held)

    def disconnect(self, host: str, send: Send) -> None:
        """The agent's stream ended (ignored when a newer stream of the same host replaced it)."""
        if self._senders.get(host) is send:
            del self._senders[host]

    def connected(self, host: str) -> bool:
        return host in self._senders

    # -- commands ------------------------------------------------------------------------
    def submit(self, command: Command) -> PendingCommand:
        """Accept a command: send it now if its agent is connected, else hold it.

        A command id seen before returns the existing record (a client retrying safely).
        """
        existing = self.find(command.id)
        if existing is not None:
            return existing
        queue = self._pending.setdefault(command.host, {})
        if len(queue) >= self.config.max_pending_per_host:
            raise DispatchRejected(
                f"{len(queue)} commands already pending for host {command.host!r} "
                f"(limit {self.config.max_pending_per_host}); try again later"
            )
        pending = PendingCommand(command=command, submitted_at=self.clock())
        queue[command.id] = pending
        if command.host in self._senders:
            self._send(command.host, pending)
        else:
            log.info("host %s is offline: holding command %s until %s", command.host, command.id,
                     time.strftime("%H:%M:%S", time.localtime(command.deadline)))
        return pending

    def find(self, command_id: str) -> PendingCommand | None:
        for queue in self._pending.values():
            if command_id in queue:
                return queue[command_id]
        return self._recent.get(command_id)

    def pending_count(self, host: str) -> int:
        return len(self._pending.get(host, {}))

    def record_outcome(self, host: str, outcome: Outcome) -> PendingCommand | None:
        """An agent reported an outcome; returns the finished command (None if unknown or late)."""
        pending = self._pending.get(host, {}).pop(outcome.command_id, None)
        if pending is None:
            log.debug("outcome of unknown or finished command %s from %s ignored", outcome.command_id, host)
            return None
        self._finish(pending, outcome)
        return pending

    def run_once(self, now: float | None = None) -> None:
        """Resend commands whose outcome is overdue; expire commands past their deadline."""
        now = self.clock() if now is None else now
        for host, queue in list(self._pending.items()):
            for pending in list(queue.values()):
                if now >= pending.command.deadline:
                    del queue[pending.command.id]
                    self._finish(pending, self._expired(host, pending, now))
                elif (
                    host in self._senders
                    and pending.last_sent is not None
                    and now - pending.last_sent >= self.config.retry_interval_s
                ):
                    log.info("no outcome for command %s yet: resending to %s (attempt %d)",
                             pending.command.id, host, pending.attempts + 1)
                    self._send(host, pending, now)

    # -- internals -----------------------------------------------------------------------
    def _send(self, host: str, pending: PendingCommand, now: float | None = None) -> None:
        pending.attempts += 1
        pending.last_sent = self.clock() if now is None else now
        self._senders[host](pending.command)

    def _expired(self, host: str, pending: PendingCommand, now: float) -> Outcome:
        waited = now - pending.submitted_at
        if pending.attempts == 0:
            why = f"host {host!r} was offline; the command was held {waited:.0f} s and never delivered"
        else:
            why = (f"no outcome from host {host!r} after {pending.attempts} attempt(s) in "
                   f"{waited:.0f} s; the agent may or may not have applied it")
        return Outcome(command_id=pending.command.id, status="EXPIRED", message=f"command expired: {why}",
                       finished_at=now)

    def _finish(self, pending: PendingCommand, outcome: Outcome) -> None:
        self._recent[pending.command.id] = pending
        while len(self._recent) > RECENT_COMMANDS:
            self._recent.popitem(last=False)
        log.info("command %s (%s %s on %s): %s %s", pending.command.id, pending.command.kind,
                 pending.command.vm or pending.command.pool, pending.command.host, outcome.status,
                 outcome.message)
        pending._finish(outcome)
