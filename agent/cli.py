"""``presculpt-agent``: the per-host agent's command line.

    presculpt-agent inventory --uri URI [--json]
    presculpt-agent metrics --uri URI [--interval S] [--count N] [--json]
    presculpt-agent resize DOMAIN --uri URI [--vcpus N] [--cpu-cores X] [--memory-mib M] [--json]
    presculpt-agent shadow {list,fill,activate,drain} ...
    presculpt-agent run --uri URI --coordinator HOST:PORT [--interval S] [--spool FILE]
                        [--agent-id ID] [--metrics-listen HOST:PORT] [--ca F --cert F --key F | --insecure]
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import logging
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from presculpt.agent.collectors import GuestCollector, HostCollector
from presculpt.agent.config import WARM_STATES, AgentConfig, load_agent_config
from presculpt.agent.guard import GuardRefused, SafetyGuard
from presculpt.agent.hypervisor.base import HypervisorError
from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor
from presculpt.agent.model import DomainInfo, TargetShape
from presculpt.agent.resize import ResizeFailed, Resizer
from presculpt.agent.shadow import ShadowPool, ShadowPoolError
from presculpt.agent.spool import SpoolError
from presculpt.clitools import (
    ArgumentParser,
    address,
    log_format_flag,
    non_negative_int,
    positive_float,
    positive_int,
    print_json,
    print_table,
    run,
)
from presculpt.errors import UserError
from presculpt.sdnotify import SystemdNotifier
from presculpt.tls import tls_flags

PROG = "presculpt-agent"
USER_ERRORS = (HypervisorError, GuardRefused, ResizeFailed, ShadowPoolError, SpoolError)
log = logging.getLogger(__name__)


def _config(args: argparse.Namespace) -> AgentConfig:
    cfg = load_agent_config(args.config)
    if args.uri:
        cfg = dataclasses.replace(cfg, uri=args.uri)
    return cfg


def _connect(cfg: AgentConfig) -> LibvirtHypervisor:
    hv = LibvirtHypervisor(cfg.uri)
    hv.connect()
    return hv


def domain_row(d: DomainInfo) -> dict:
    """A domain as a flat JSON object (used by --json and the tables)."""
    b = d.balloon
    return {
        "name": d.name,
        "uuid": d.uuid,
        "state": d.state,
        "vcpus": d.vcpus,
        "max_vcpus": d.max_vcpus,
        "cpu_quota_cores": d.cpu_quota_cores,
        "memory_mib": d.memory_mib,
        "max_memory_mib": d.max_memory_mib,
        "memory_used_mib": None if b is None or b.used_mib is None else round(b.used_mib, 1),
        "guest_mem_total_mib": None if b is None or b.available_mib is None else round(b.available_mib, 1),
        "balloon": None if b is None else dataclasses.asdict(b),
        "metadata": dict(d.metadata),
    }


DOMAIN_COLUMNS = [
    ("name", "NAME"),
    ("state", "STATE"),
    ("vcpus", "VCPUS"),
    ("max_vcpus", "MAX"),
    ("cpu_quota_cores", "CPU CAP"),
    ("memory_mib", "MEM MIB"),
    ("max_memory_mib", "MAX MIB"),
    ("memory_used_mib", "USED MIB"),
]


def cmd_inventory(args: argparse.Namespace) -> int:
    hv = _connect(_config(args))
    try:
        host = hv.host_info()
        domains = [domain_row(d) for d in hv.list_domains()]
    finally:
        hv.close()
    if args.json:
        print_json({"host": host, "domains": domains})
        return 0
    print(
        f"host {host.hostname}: {host.cpus} CPUs, {host.memory_mib} MiB, {host.hypervisor}, "
        f"libvirt {host.libvirt_version} ({host.uri})"
    )
    print_table(domains, DOMAIN_COLUMNS)
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    cfg = _config(args)
    interval = args.interval or cfg.interval_s
    hv = _connect(cfg)
    guests, host = GuestCollector(hv), HostCollector()
    out = []
    try:
        quotas = {d.uuid: d.cpu_quota_cores for d in hv.list_domains()}
        guests.sample(quotas)
        host.sample()
        for i in range(args.count):
            time.sleep(interval)
            vms = guests.sample(quotas)
            host_sample = host.sample()
            out.append({"host": host_sample, "vms": vms})
            if not args.json:
                if i:
                    print()
                print(
                    f"host: {host_sample.cpu_used_cores:.2f}/{host_sample.cpu_count} cores, "
                    f"{host_sample.memory_used_mib:.0f}/{host_sample.memory_total_mib:.0f} MiB, "
                    f"load {host_sample.load1:.2f}"
                )
                print_table(
                    [dataclasses.asdict(v) for v in vms],
                    [("name", "NAME"), ("cpu_cores", "CPU CORES"), ("vcpus", "VCPUS"),
                     ("memory_mib", "MEM MIB"), ("memory_used_mib", "USED MIB"),
                     ("disk_read_bps", "DISK R B/S"), ("disk_write_bps", "DISK W B/S"),
                     ("net_rx_bps", "NET RX B/S"), ("net_tx_bps", "NET TX B/S")],
                )
    finally:
        hv.close()
    if args.json:
        print_json(out if args.count > 1 else out[0])
    return 0


def _target(args: argparse.Namespace) -> TargetShape:
    target = TargetShape(vcpus=args.vcpus, cpu_cores=args.cpu_cores, memory_mib=args.memory_mib)
    if target.is_empty():
        raise UserError("nothing to change: give --vcpus, --cpu-cores or --memory-mib")
    return target


def cmd_resize(args: argparse.Namespace) -> int:
    cfg = _config(args)
    target = _target(args)
    hv = _connect(cfg)
    try:
        result = Resizer(hv, SafetyGuard(cfg.guard)).apply(args.domain, target)
        after = hv.domain_info(args.domain)
    finally:
        hv.close()
    if args.json:
        print_json({"domain": args.domain, "steps": list(result.steps), "state": domain_row(after)})
        return 0
    print(f"{args.domain}: " + ("; ".join(result.steps) if result.steps else "already at the target shape"))
    print_table([domain_row(after)], DOMAIN_COLUMNS)
    return 0


def _pool(args: argparse.Namespace, hv: LibvirtHypervisor, cfg: AgentConfig, need_template: bool) -> ShadowPool:
    template_path = args.template or cfg.shadow.template
    template = ""
    if need_template:
        if not template_path:
            raise UserError("a shadow template is needed: give --template FILE or shadow.template")
        try:
            template = Path(template_path).read_text()
        except OSError as err:
            raise UserError(f"cannot read shadow template {template_path}: {err.strerror}") from None
    resizer = Resizer(hv, SafetyGuard(cfg.guard))
    return ShadowPool(hv, resizer, template, pool=args.pool or cfg.shadow.pool,
                      ready_timeout_s=cfg.shadow.ready_timeout_s)


def cmd_shadow(args: argparse.Namespace) -> int:
    cfg = _config(args)
    hv = _connect(cfg)
    try:
        return _SHADOW_ACTIONS[args.action](args, hv, cfg)
    finally:
        hv.close()


def _shadow_list(args: argparse.Namespace, hv: LibvirtHypervisor, cfg: AgentConfig) -> int:
    shadows = _pool(args, hv, cfg, need_template=False).list()
    if args.json:
        print_json(shadows)
    else:
        print_table([dataclasses.asdict(s) for s in shadows],
                    [("name", "NAME"), ("pool", "POOL"), ("warm_state", "WARM STATE"), ("state", "STATE")])
    return 0


def _shadow_fill(args: argparse.Namespace, hv: LibvirtHypervisor, cfg: AgentConfig) -> int:
    size = args.count if args.count is not None else cfg.shadow.size
    state = args.state or cfg.shadow.warm_state
    created = _pool(args, hv, cfg, need_template=True).fill(size, state)
    if args.json:
        print_json(created)
    else:
        print(f"created {len(created)} {state} shadow(s)" + (": " + ", ".join(s.name for s in created) if created else ""))
    return 0


def _shadow_activate(args: argparse.Namespace, hv: LibvirtHypervisor, cfg: AgentConfig) -> int:
    metadata = {}
    for item in args.meta or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"--meta takes KEY=VALUE with KEY a plain word, got {item!r}")
        metadata[key] = value
    shape = TargetShape(vcpus=args.vcpus, cpu_cores=args.cpu_cores, memory_mib=args.memory_mib)
    pool = _pool(args, hv, cfg, need_template=args.replenish)
    before = pool.list()
    activation = pool.activate(args.name, shape, metadata, warm_state=args.state)
    refilled = []
    if args.replenish:
        keep = sum(1 for s in before if s.warm_state == activation.warm_state)
        refilled = pool.fill(keep, activation.warm_state)
    if args.json:
        print_json({"activation": activation, "replenished": refilled})
    else:
        print(
            f"activated {activation.shadow} ({activation.warm_state}) as {activation.assigned_name} "
            f"in {activation.activate_seconds:.2f} s"
            + (f"; replenished {', '.join(s.name for s in refilled)}" if refilled else "")
        )
    return 0


def _shadow_drain(args: argparse.Namespace, hv: LibvirtHypervisor, cfg: AgentConfig) -> int:
    removed = _pool(args, hv, cfg, need_template=False).drain()
    if args.json:
        print_json(removed)
    else:
        print(f"removed {len(removed)} shadow(s)" + (": " + ", ".join(removed) if removed else ""))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    # Imported here: the one-shot commands need neither gRPC nor the Prometheus client.
    from presculpt.agent.commands import CommandApplier
    from presculpt.agent.metrics import AgentMetrics
    from presculpt.agent.runner import AgentRunner
    from presculpt.agent.spool import BatchSpool
    from presculpt.metrics import serve_metrics
    from presculpt.tls import load_material

    cfg = _config(args)
    stream = cfg.stream
    stream = dataclasses.replace(
        stream, **{k: v for k, v in (("coordinator", args.coordinator), ("agent_id", args.agent_id),
                                     ("spool_path", args.spool)) if v})
    cfg = dataclasses.replace(cfg, stream=stream, interval_s=args.interval or cfg.interval_s,
                              metrics_listen=args.metrics_listen or cfg.metrics_listen)
    if not stream.coordinator:
        raise UserError("give --coordinator HOST:PORT (or stream.coordinator in the config)")
    cfg = dataclasses.replace(cfg, tls=cfg.tls.with_overrides(args.ca, args.cert, args.key, args.insecure))
    load_material(cfg.tls, "the agent")  # checked before anything starts: one line on what is missing
    template = ""
    if cfg.shadow.template:
        try:
            template = Path(cfg.shadow.template).read_text()
        except OSError as err:
            raise UserError(f"cannot read shadow template {cfg.shadow.template}: {err.strerror}") from None
    notifier = SystemdNotifier.from_environment()
    if notifier.enabled:
        faulthandler.enable()  # a watchdog abort (SIGABRT) logs where every thread was stuck
    hv = _connect(cfg)
    resizer = Resizer(hv, SafetyGuard(cfg.guard))
    status = ""

    def heartbeat() -> None:
        """Called by the loop: pings systemd's watchdog and keeps the unit's status line current."""
        nonlocal status
        notifier.heartbeat()
        now = (f"streaming to {stream.coordinator}" if runner.link.connected.is_set()
               else f"coordinator {stream.coordinator} not connected")
        if now != status:
            status = now
            notifier.status(f"agent {runner.agent_id} on {cfg.uri}: {now}")

    def wait_for_shadow(seconds: float) -> None:
        heartbeat()  # a shadow activation polls its boot for up to shadow.ready_timeout_s: not stuck
        time.sleep(seconds)

    def pool(name: str) -> ShadowPool:
        if not template:
            raise ShadowPoolError("this agent has no shadow template (shadow.template)")
        return ShadowPool(hv, resizer, template, pool=name, ready_timeout_s=cfg.shadow.ready_timeout_s,
                          sleep=wait_for_shadow)

    metrics = AgentMetrics()
    runner = AgentRunner(hv, cfg, resizer, CommandApplier(resizer, pool), BatchSpool(stream.spool_path,
                         stream.spool_max_batches), stream.coordinator, metrics)
    endpoint = serve_metrics(cfg.metrics_listen, metrics.registry) if cfg.metrics_listen else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runner.start()
    log.info("agent %s on %s: sampling every %g s, coordinator %s", runner.agent_id, cfg.uri,
             cfg.interval_s, stream.coordinator)
    # Under systemd (Type=notify): ready once libvirt answered and the loop runs; the loop pings
    # the watchdog, so a stuck loop gets the agent restarted.
    notifier.ready()
    try:
        runner.run(stop, heartbeat)
    finally:
        notifier.stopping("stopping")
        runner.stop()
        hv.close()
        if endpoint is not None:
            endpoint.stop()
    return 0


_SHADOW_ACTIONS = {
    "list": _shadow_list,
    "fill": _shadow_fill,
    "activate": _shadow_activate,
    "drain": _shadow_drain,
}


def build_parser() -> ArgumentParser:
    daemon = argparse.ArgumentParser(add_help=False)
    daemon.add_argument("--uri", help="libvirt URI (default: the config's, else qemu:///system)")
    daemon.add_argument("--config", help="agent config file (TOML; see config/agent.sample.toml)")
    daemon.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    common = argparse.ArgumentParser(add_help=False, parents=[daemon])
    common.add_argument("--json", action="store_true", help="print JSON on stdout")

    parser = ArgumentParser(prog=PROG, description="Presculpt's per-host agent.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)

    p = sub.add_parser("inventory", parents=[common], help="host capacity and every domain")
    p.set_defaults(func=cmd_inventory)

    p = sub.add_parser("metrics", parents=[common], help="measure every running guest over an interval")
    p.add_argument("--interval", type=positive_float, help="seconds per sample (default: config, 5)")
    p.add_argument("--count", type=positive_int, default=1, help="samples to take (default 1)")
    p.set_defaults(func=cmd_metrics)

    def shape_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--vcpus", type=positive_int, help="vCPUs online")
        p.add_argument("--cpu-cores", type=positive_float,
                       help="total CPU cap in cores (1.5 = 2 vCPUs capped at 1.5 cores)")
        p.add_argument("--memory-mib", type=positive_int, help="memory (balloon target) in MiB")

    p = sub.add_parser("resize", parents=[common], help="resize a running guest live, guarded")
    p.add_argument("domain", help="domain name")
    shape_flags(p)
    p.set_defaults(func=cmd_resize)

    p = sub.add_parser("run", parents=[daemon], help="stream metrics to the coordinator and apply its commands")
    p.add_argument("--coordinator", type=address, help="coordinator HOST:PORT (default: stream.coordinator)")
    p.add_argument("--interval", type=positive_float, help="seconds per sample (default: config, 5)")
    p.add_argument("--agent-id", help="this host's identity at the coordinator (default: the hostname)")
    p.add_argument("--spool", help="spool file of unacknowledged batches (default: stream.spool_path)")
    p.add_argument("--metrics-listen", type=address, help="serve Prometheus metrics on HOST:PORT")
    tls_flags(p, "the coordinator")
    log_format_flag(p)
    p.set_defaults(func=cmd_run, progress=True)

    p = sub.add_parser("shadow", help="the pool of warm shadow VMs")
    shadow = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=ArgumentParser)
    pool_flags = argparse.ArgumentParser(add_help=False)
    pool_flags.add_argument("--pool", help="pool name (default: the config's, else 'default')")
    pool_flags.add_argument("--template", help="domain XML template; '{name}' is replaced by the shadow's name")

    s = shadow.add_parser("list", parents=[common, pool_flags], help="the pool's shadows")
    s.set_defaults(func=cmd_shadow)
    s = shadow.add_parser("fill", parents=[common, pool_flags], help="create shadows until the pool is full")
    s.add_argument("--count", type=non_negative_int, help="shadows to keep in this warm state")
    s.add_argument("--state", choices=WARM_STATES, help="warm state (default: the config's, else paused)")
    s.set_defaults(func=cmd_shadow, progress=True)
    s = shadow.add_parser("activate", parents=[common, pool_flags], help="hand out a warm shadow")
    s.add_argument("--name", required=True, help="the name the activated VM is handed over under")
    s.add_argument("--state", choices=WARM_STATES, help="take a shadow in this warm state only")
    s.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata to set (repeatable)")
    s.add_argument("--no-replenish", dest="replenish", action="store_false",
                   help="do not create a new shadow to replace the one handed out")
    shape_flags(s)
    s.set_defaults(func=cmd_shadow, progress=True)
    s = shadow.add_parser("drain", parents=[common, pool_flags], help="remove every shadow of the pool")
    s.set_defaults(func=cmd_shadow)
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    return run(PROG, build_parser(), argv, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
