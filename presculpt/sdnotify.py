"""The daemons' side of systemd's notify protocol (sd_notify(3)): readiness, watchdog pings, status
lines and stopping, each a datagram to ``$NOTIFY_SOCKET``.

systemd sets ``NOTIFY_SOCKET`` for a ``Type=notify`` service (a path, or ``@name`` in the abstract
namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, the process meant).
Without ``NOTIFY_SOCKET`` every call does nothing, so the daemons behave the same on a terminal. A
failed send is logged once and never stops the daemon: systemd's own timeouts then say what went
wrong.

The protocol is a few lines of ``KEY=VALUE`` in one datagram; this module is small enough that no
library is worth depending on for it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping

log = logging.getLogger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


def socket_address(value: str) -> str:
    """``$NOTIFY_SOCKET`` as a socket address: ``@name`` is ``\\0name`` in the abstract namespace."""
    return "\0" + value[1:] if value.startswith("@") else value


def watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """The watchdog timeout systemd set for process ``pid`` in microseconds; None when there is none
    (unset, zero, malformed, or meant for another process)."""
    meant_for = environ.get(ENV_WATCHDOG_PID)
    if meant_for and meant_for.strip() != str(pid):
        return None
    try:
        usec = int(environ.get(ENV_WATCHDOG_USEC, ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


class SystemdNotifier:
    """Sends notify messages to systemd; a no-op when ``address`` is None.

    ``heartbeat`` is meant to be called often from the daemon's main loop: it pings the watchdog
    at half its timeout, so that a loop that stops turning stops the pings and systemd restarts the
    daemon. Safe to call from several threads.
    """

    def __init__(self, address: str | None, watchdog_usec: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.address = address
        self.watchdog_usec = watchdog_usec if address else None
        self.clock = clock
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._last_ping = float("-inf")
        self._failed = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None,
                         unset: bool = True) -> "SystemdNotifier":
        """The notifier systemd asked for through the environment. With ``unset`` the variables are
        removed, so that no child process talks to systemd in the daemon's name."""
        env = os.environ if environ is None else environ
        address = env.get(ENV_SOCKET) or None
        usec = watchdog_usec(env, os.getpid())
        if unset:
            for name in (ENV_SOCKET, ENV_WATCHDOG_USEC, ENV_WATCHDOG_PID):
                env.pop(name, None)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping the watchdog: half its timeout (None: no watchdog)."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram (``ready=1`` is ``READY=1``). True when sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    self._socket.connect(socket_address(self.address))
                self._socket.send(message)
            except OSError as err:
                if not self._failed:
                    log.warning("cannot notify systemd at %s: %s", self.address, err)
                    self._failed = True
                self._close()
                return False
        return True

    def ready(self, status: str = "") -> bool:
        """The daemon serves: systemd finishes starting it (and starts its watchdog)."""
        self._last_ping = self.clock()
        return self.notify(ready=1, status=status) if status else self.notify(ready=1)

    def status(self, text: str) -> bool:
        """A one-line status, shown by ``systemctl status``."""
        return self.notify(status=text)

    def stopping(self, status: str = "") -> bool:
        """The daemon has begun to shut down."""
        return self.notify(stopping=1, status=status) if status else self.notify(stopping=1)

    def watchdog(self) -> bool:
        """Ping the watchdog now."""
        if self.watchdog_usec is None:
            return False
        self._last_ping = self.clock()
        return self.notify(watchdog=1)

    def heartbeat(self) -> None:
        """Ping the watchdog when half its timeout has passed since the last ping."""
        interval = self.watchdog_interval_s
        if interval is not None and self.clock() - self._last_ping >= interval:
            self.watchdog()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
