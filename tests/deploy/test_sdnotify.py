"""The notify protocol's client alone: addresses, the watchdog's environment, rate-limited pings,
and silence (never an error) when systemd did not ask for notifications."""

from __future__ import annotations

import logging
import socket

import pytest

from presculpt.sdnotify import SystemdNotifier, socket_address, watchdog_usec


@pytest.fixture
def receiver(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(5)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_abstract_addresses_start_with_a_nul():
    assert socket_address("@presculpt/notify") == "\0presculpt/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


@pytest.mark.parametrize("env, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 30_000_000),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30_000_000),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_environment(env, expected):
    assert watchdog_usec(env, pid=4242) == expected


def test_without_notify_socket_nothing_happens():
    notifier = SystemdNotifier.from_environment({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    assert notifier.ready("up") is False
    notifier.heartbeat()
    assert notifier.stopping() is False


def test_from_environment_takes_the_variables_away(receiver):
    env = {"NOTIFY_SOCKET": receiver.getsockname(), "WATCHDOG_USEC": "4000000", "PATH": "/bin"}
    notifier = SystemdNotifier.from_environment(env)
    assert env == {"PATH": "/bin"}  # children do not notify in the daemon's name
    assert notifier.watchdog_interval_s == 2.0
    assert notifier.ready("listening on 127.0.0.1:7600")
    assert received(receiver) == ["READY=1", "STATUS=listening on 127.0.0.1:7600"]
    assert notifier.stopping("stopping")
    assert received(receiver) == ["STOPPING=1", "STATUS=stopping"]
    notifier.close()


def test_heartbeat_pings_at_half_the_timeout(receiver):
    now = [100.0]
    notifier = SystemdNotifier(receiver.getsockname(), watchdog_usec=10_000_000, clock=lambda: now[0])
    notifier.ready()
    assert received(receiver) == ["READY=1"]
    receiver.settimeout(0.2)
    for t in (101.0, 104.9):  # within 5 s of the last ping (at ready): nothing
        now[0] = t
        notifier.heartbeat()
    with pytest.raises(TimeoutError):
        receiver.recv(4096)
    now[0] = 105.0
    notifier.heartbeat()
    assert received(receiver) == ["WATCHDOG=1"]
    now[0] = 109.0
    notifier.heartbeat()
    with pytest.raises(TimeoutError):
        receiver.recv(4096)


def test_a_dead_socket_is_logged_once_and_never_raises(tmp_path, caplog):
    notifier = SystemdNotifier(str(tmp_path / "gone.sock"), watchdog_usec=1_000_000)
    with caplog.at_level(logging.WARNING, logger="presculpt.sdnotify"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot notify systemd at {tmp_path / 'gone.sock'}: [Errno 2] No such file or directory"]
