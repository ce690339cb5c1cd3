"""The agent's loop calls its heartbeat (systemd's watchdog) while it waits between ticks, and
stops calling it while a tick is stuck."""

from __future__ import annotations

import threading
import time

from presculpt.agent.hypervisor.fake import FakeHypervisor

from .conftest import make_agent, wait_until


def test_heartbeat_while_waiting_and_not_while_stuck(tmp_path):
    hv = FakeHypervisor(cpus=4, memory_mib=8192)
    hv.add_domain("guest-a", vcpus=1, max_vcpus=2, memory_mib=1024, max_memory_mib=2048)
    hv.connect()
    runner = make_agent(hv, "127.0.0.1:1", tmp_path / "spool.db", interval_s=2.0)
    runner.start()
    beats: list[float] = []
    stuck, release, stop = threading.Event(), threading.Event(), threading.Event()
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 2:  # the second tick hangs (a libvirt call that never returns)
            stuck.set()
            release.wait(30)

    runner.run_once = tick
    thread = threading.Thread(target=runner.run, args=(stop, lambda: beats.append(time.monotonic())))
    thread.start()
    try:
        assert stuck.wait(30)
        waiting = list(beats)
        gaps = [b - a for a, b in zip(waiting, waiting[1:])]
        assert len(waiting) >= 4 and max(gaps) < 1.0  # at least twice a second between ticks
        before = len(beats)
        time.sleep(1.5)  # the tick stays stuck: no heartbeat meanwhile
        assert len(beats) == before
        release.set()
        wait_until(lambda: len(beats) > before, timeout=30)
    finally:
        release.set()
        stop.set()
        thread.join(30)
        runner.stop()
        hv.close()
