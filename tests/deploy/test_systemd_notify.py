"""Both daemons speak systemd's notify protocol for real: each runs as a subprocess, the way a
``Type=notify`` unit runs it, with ``NOTIFY_SOCKET`` on a datagram socket this test owns,
``WATCHDOG_USEC`` set and stderr on a pipe named by ``JOURNAL_STREAM``. READY=1 must arrive once
the daemon serves, WATCHDOG=1 keep arriving within the watchdog timeout, STOPPING=1 follow SIGTERM,
and every log line be logfmt with its syslog priority. No fixed sleeps: every wait has a deadline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
WATCHDOG_USEC = 3_000_000  # pings expected every 1.5 s, each within 3 s of the last
START_DEADLINE_S = 120.0  # the coordinator loads the forecaster (torch) before it is ready
DEADLINE_S = 30.0


class NotifySocket:
    """The receiving end of $NOTIFY_SOCKET: every datagram, parsed, with its arrival time."""

    def __init__(self, address: str):
        self.address = address  # as NOTIFY_SOCKET names it: a path, or @name (abstract)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def wait_for(self, accept: Callable[[dict[str, str]], bool], deadline_s: float,
                 proc: subprocess.Popen | None = None) -> dict[str, str]:
        """The first new message ``accept`` takes, within ``deadline_s``."""
        deadline = time.monotonic() + deadline_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"the daemon exited with status {proc.returncode}") from None
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))
            if accept(fields):
                return fields
        raise AssertionError(f"no such message within {deadline_s:g} s; got {[m for _, m in self.messages]}")

    def close(self) -> None:
        self.sock.close()


class JournalPipe:
    """A pipe standing in for the journal stream: ``env`` names it as systemd would
    (JOURNAL_STREAM=device:inode); a thread collects the lines."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        st = os.fstat(self.write_fd)
        self.env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        with os.fdopen(self.read_fd, "r", errors="replace") as stream:
            for line in stream:
                self.lines.append(line.rstrip("\n"))

    def after_spawn(self) -> None:
        os.close(self.write_fd)

    def finish(self) -> list[str]:
        self._thread.join(timeout=DEADLINE_S)
        return self.lines


@pytest.fixture
def notify_path(tmp_path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


@pytest.fixture
def notify_abstract() -> Iterator[NotifySocket]:
    listener = NotifySocket(f"@presculpt-test-{uuid.uuid4().hex}")
    yield listener
    listener.close()


def insecure_flag(command: str, *sub: str) -> list[str]:
    """``--insecure`` where the daemon has it (plain text needs it once mutual TLS is in)."""
    help_text = subprocess.run([str(BIN / command), *sub, "--help"], capture_output=True, text=True,
                               timeout=DEADLINE_S).stdout
    return ["--insecure"] if "--insecure" in help_text else []


def spawn(argv: list[str], notify: NotifySocket, journal: JournalPipe) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_PID", "JOURNAL_STREAM")}
    env.update(journal.env, NOTIFY_SOCKET=notify.address, WATCHDOG_USEC=str(WATCHDOG_USEC))
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=journal.write_fd)
    journal.after_spawn()
    return proc


def check_watchdog_and_stop(proc: subprocess.Popen, notify: NotifySocket) -> None:
    """Three watchdog pings, each within the timeout of the previous one; SIGTERM -> STOPPING=1, exit 0."""
    ready_at = notify.messages[-1][0]
    pings = [ready_at]
    for _ in range(3):
        notify.wait_for(lambda m: m.get("WATCHDOG") == "1", DEADLINE_S, proc)
        pings.append(notify.messages[-1][0])
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < WATCHDOG_USEC / 1e6, f"watchdog pings {gaps} s apart"
    proc.send_signal(signal.SIGTERM)
    notify.wait_for(lambda m: m.get("STOPPING") == "1", DEADLINE_S)
    assert proc.wait(timeout=DEADLINE_S) == 0


def assert_journal_lines(lines: list[str]) -> None:
    """Every line of our own loggers: a syslog priority, then logfmt starting with level=."""
    ours = [line for line in lines if "logger=presculpt." in line]
    assert ours, lines
    for line in ours:
        assert line[:3] in ("<3>", "<4>", "<6>", "<7>") and line[3:].startswith("level="), line


def terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=DEADLINE_S)


def test_coordinator_notifies_ready_watchdog_and_stopping(tmp_path, notify_path):
    journal = JournalPipe()
    argv = [str(BIN / "presculpt-coordinator"), "serve", "--listen", "127.0.0.1:0", "--db",
            str(tmp_path / "presculpt.db"), *insecure_flag("presculpt-coordinator", "serve")]
    proc = spawn(argv, notify_path, journal)
    try:
        ready = notify_path.wait_for(lambda m: m.get("READY") == "1", START_DEADLINE_S, proc)
        assert ready["STATUS"].startswith("listening on 127.0.0.1:")
        port = int(ready["STATUS"].split()[2].rstrip(",").rpartition(":")[2])
        # Ready means serving: the port accepts connections at once.
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S).close()
        check_watchdog_and_stop(proc, notify_path)
    finally:
        terminate(proc)
    lines = journal.finish()
    listening = [line for line in lines if "coordinator listening on" in line]
    assert listening and listening[0].startswith(
        "<6>level=info logger=presculpt.coordinator.server msg=\"coordinator listening on 127.0.0.1:"), lines
    assert_journal_lines(lines)
    assert any(line.startswith("<6>level=info logger=presculpt.coordinator.cli msg=\"stopping on signal\"")
               for line in lines), lines


def test_agent_notifies_ready_watchdog_and_stopping(tmp_path, notify_abstract, testnode_uri):
    journal = JournalPipe()
    with socket.socket() as probe:  # a port nothing listens on: the agent runs without a coordinator
        probe.bind(("127.0.0.1", 0))
        unreachable = f"127.0.0.1:{probe.getsockname()[1]}"
    argv = [str(BIN / "presculpt-agent"), "run", "--uri", testnode_uri, "--coordinator", unreachable,
            "--spool", str(tmp_path / "spool.db"), "--interval", "0.5", "--agent-id", "notify-test",
            *insecure_flag("presculpt-agent", "run")]
    proc = spawn(argv, notify_abstract, journal)
    try:
        notify_abstract.wait_for(lambda m: m.get("READY") == "1", START_DEADLINE_S, proc)
        status = notify_abstract.wait_for(lambda m: "STATUS" in m, DEADLINE_S, proc)
        assert status["STATUS"] == f"agent notify-test on {testnode_uri}: coordinator {unreachable} not connected"
        check_watchdog_and_stop(proc, notify_abstract)
    finally:
        terminate(proc)
    lines = journal.finish()
    assert any(line.startswith("<6>level=info logger=presculpt.agent.cli msg=\"agent notify-test on ")
               for line in lines), lines
    assert_journal_lines(lines)
