"""The agent's loop while the coordinator is unreachable: it keeps sampling into the spool and
keeps guests safe on its own; once the coordinator appears, the spool drains into the store."""

from __future__ import annotations

from presculpt.agent.hypervisor.fake import FakeHypervisor

from .conftest import AgentThread, CoordinatorThread, coordinator_config, make_agent, wait_until


def test_unreachable_coordinator_then_catch_up(tmp_path):
    hv = FakeHypervisor()
    hv.add_domain("starved", memory_mib=600, max_memory_mib=2048, used_mib=550)
    hv.add_domain("fine", memory_mib=1024, used_mib=100)
    hv.connect()
    config = coordinator_config(tmp_path)
    runner = make_agent(hv, config.listen, tmp_path / "spool.db", local_safety_after_s=0.0)
    runner.start()
    try:
        for _ in range(5):
            runner.run_once()
        assert not runner.link.connected.is_set()
        assert len(runner.spool) == 5  # the first tick only primes the counters but has a host sample
        assert hv.domain_info("starved").memory_mib == 678  # 550 used + 128 margin
        assert hv.domain_info("fine").memory_mib == 1024  # never shrunk on its own
    finally:
        runner.stop()
    coordinator = CoordinatorThread(config).start()
    agent = AgentThread(make_agent(hv, config.listen, tmp_path / "spool.db"))
    agent.start()
    try:
        wait_until(lambda: len(agent.runner.spool) == 0, what="the spool to drain")
        store = coordinator.server.store
        assert store.last_seq("host-1") >= 5
        assert store.count_samples() >= 8  # 4 ticks x 2 VMs from the outage, plus live ones
    finally:
        agent.stop()
        coordinator.stop()
