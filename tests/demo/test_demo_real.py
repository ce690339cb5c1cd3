"""`presculpt demo` on real guests, as a newcomer runs it: a short replay whose planner commands are
applied and seen inside the guests, and a Ctrl-C in the middle that leaves nothing behind.

The demo boots its own guests (presculpt-lab-demo-N), so it leaves the session's shared lab alone.
It trains its forecaster on the first run and caches it: the second test loads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor
from presculpt.demo.run import DEFAULT_TRACE, NAME_PREFIX
from presculpt.lab.lab import Lab

pytestmark = pytest.mark.lab

RUN_TIMEOUT_S = 900.0  # training, booting three TCG guests and the replay, on a busy 2-core host


def presculpt() -> list[str]:
    script = Path(sys.executable).with_name("presculpt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "presculpt.cli"]


@contextlib.contextmanager
def system_hypervisor() -> Iterator[LibvirtHypervisor]:
    hv = LibvirtHypervisor("qemu:///system")
    hv.connect()
    try:
        yield hv
    finally:
        hv.close()


def demo_guests() -> list[str]:
    with system_hypervisor() as hv:
        return [d.name for d in hv.list_domains() if d.name.startswith(NAME_PREFIX)]


def remove_demo_guests() -> None:
    """What a demo that had to be killed left behind (it would hold the host's vCPUs for the next tests)."""
    with system_hypervisor() as hv:
        Lab(hv, name_prefix=NAME_PREFIX).down()


@pytest.fixture(autouse=True)
def needs_the_trace():
    if not (DEFAULT_TRACE / "usage.csv.gz").is_file():
        pytest.fail(f"the demo needs the trace at {DEFAULT_TRACE} (shared/traces next to the repository)")


def test_a_short_demo_reshapes_real_guests_seen_from_inside(tmp_path):
    out = tmp_path / "out.json"
    done = subprocess.run([*presculpt(), "demo", "--duration", "40", "--step-seconds", "2", "--json", str(out),
                           "--out", str(tmp_path / "pictures")], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())

    actions = result["actions"]
    assert actions, done.stdout[-3000:]
    assert all({"vm", "kind", "applied", "guest_seen", "reason", "status"} <= set(a) for a in actions)
    applied = [a for a in actions if a["applied"]]
    assert applied and all(a["status"] == "APPLIED" for a in applied)
    # vCPUs and memory show in the guest's own reports; a CPU cap only where it binds.
    visible = [a for a in applied if any(s.startswith(("vcpus", "memory")) for s in a["steps"])]
    assert visible, "no applied command changed vCPUs or memory"
    assert all(a["guest_seen"] is True for a in visible), [a for a in visible if a["guest_seen"] is not True]
    assert all(a["guest_seen"] in (True, False, None) for a in actions)

    summary = result["summary"]
    for policy in ("presculpt", "static"):
        assert {"violation", "slack", "memory_violation", "memory_slack", "actions"} <= set(summary[policy])
        assert 0 <= summary[policy]["violation"] <= 1 and 0 <= summary[policy]["slack"] <= 1
    assert summary["static"]["violation"] == 0.0
    assert summary["presculpt"]["slack"] < summary["static"]["slack"]
    assert summary["presculpt"]["actions"] == len(actions) and len(summary["guests"]) == 3
    assert result["scenario"]["steps_run"] == 20 and not result["interrupted"]
    for picture in result["plots"].values():
        assert Path(picture).read_bytes()[:4] == b"\x89PNG"
    assert "CPU VIOL" in done.stdout and "static" in done.stdout
    assert demo_guests() == []


def test_ctrl_c_in_the_middle_stops_cleanly(tmp_path):
    out, err = tmp_path / "out.json", tmp_path / "stderr.txt"
    # stderr to a file (a pipe nobody reads could fill and block the demo); with the fault handler,
    # a demo that does not stop is made to print every thread's stack before it is killed.
    with err.open("w") as stderr:
        proc = subprocess.Popen([*presculpt(), "demo", "--duration", "600", "--step-seconds", "2", "--json", str(out),
                                 "--out", str(tmp_path / "pictures")], stdout=subprocess.PIPE, stderr=stderr,
                                text=True, cwd=tmp_path, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        seen: list[str] = []
        while not any(line.startswith("Presculpt demo:") for line in seen):  # the replay's first status
            assert proc.poll() is None, "".join(seen) + err.read_text()
            assert time.monotonic() < deadline, "".join(seen)
            try:
                seen.append(lines.get(timeout=1.0))
            except queue.Empty:
                pass
        assert len(demo_guests()) == 3
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # the fault handler's dump of every thread
            proc.wait(timeout=30)
            after = []
            while not lines.empty():
                after.append(lines.get())
            pytest.fail("the demo did not stop within 120 s of Ctrl-C; its output since:\n" + "".join(after[-40:])
                        + "\nits stderr:\n" + err.read_text()[-12000:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.returncode != 130:
            remove_demo_guests()
    assert code == 130, err.read_text()[-3000:]
    assert demo_guests() == []
    result = json.loads(out.read_text())
    assert result["interrupted"] and result["scenario"]["steps_run"] < 300
    assert shutil.which("virsh") is None or "presculpt-lab-demo" not in subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True, text=True).stdout
