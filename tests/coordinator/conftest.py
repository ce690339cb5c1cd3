"""Fixtures of the coordinator tests: an in-process coordinator on a free port, agents in threads."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from presculpt.agent.commands import CommandApplier
from presculpt.agent.config import AgentConfig, StreamConfig
from presculpt.agent.guard import SafetyGuard
from presculpt.agent.hypervisor.base import Hypervisor
from presculpt.agent.resize import Resizer
from presculpt.agent.runner import AgentRunner
from presculpt.agent.spool import BatchSpool
from presculpt.coordinator.config import CoordinatorConfig, JobsConfig
from presculpt.coordinator.server import CoordinatorServer
from presculpt.tls import TlsConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class CoordinatorThread:
    """A CoordinatorServer running on its own event loop in a background thread."""

    def __init__(self, config: CoordinatorConfig):
        self.config = config
        self.server: CoordinatorServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def address(self) -> str:
        return self.config.listen

    def start(self) -> "CoordinatorThread":
        ready: Future = Future()

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            self.server = CoordinatorServer(self.config)
            try:
                await self.server.start()
            except BaseException as err:
                ready.set_exception(err)
                return
            ready.set_result(None)
            await self._stopped.wait()
            await self.server.stop(grace_s=0.5)

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        ready.result(timeout=30)
        return self

    def call(self, func: Callable[[], Any]) -> Any:
        """Run ``func`` on the coordinator's loop (its parts are loop-only) and return its result."""
        assert self.loop is not None

        async def run() -> Any:
            return func()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    def stop(self) -> None:
        if self._thread is None:
            return
        assert self.loop is not None and self._stopped is not None
        self.loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=30)
        self._thread = None


class AgentThread:
    """An AgentRunner ticking in a background thread."""

    def __init__(self, runner: AgentRunner):
        self.runner = runner
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "AgentThread":
        self.runner.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self.runner.run, args=(self._stop,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.runner.stop()


# Plain text for the loopback tests of everything else; test_mtls.py covers TLS.
INSECURE = TlsConfig(insecure=True)


def coordinator_config(tmp_path: Path, **overrides: Any) -> CoordinatorConfig:
    base = dict(listen=f"127.0.0.1:{free_port()}", db=str(tmp_path / "coordinator.db"),
                jobs=JobsConfig(dispatch_tick_s=0.1), tls=INSECURE)
    base.update(overrides)
    return CoordinatorConfig(**base)


def make_agent(hv: Hypervisor, address: str, spool_path: Path, agent_id: str = "host-1",
               interval_s: float = 0.1, spool: BatchSpool | None = None, tls: TlsConfig = INSECURE,
               **stream: Any) -> AgentRunner:
    settings = dict(agent_id=agent_id, reconnect_initial_s=0.05, reconnect_max_s=0.5)
    settings.update(stream)
    cfg = AgentConfig(uri=hv.uri, interval_s=interval_s, stream=StreamConfig(**settings), tls=tls)
    resizer = Resizer(hv, SafetyGuard(cfg.guard))
    spool = spool if spool is not None else BatchSpool(spool_path)
    return AgentRunner(hv, cfg, resizer, CommandApplier(resizer), spool, address)


@pytest.fixture
def coordinator(tmp_path):
    c = CoordinatorThread(coordinator_config(tmp_path)).start()
    yield c
    c.stop()
