"""``presculpt-coordinator``: the coordinator daemon.

    presculpt-coordinator serve --listen HOST:PORT --db PATH [--config FILE] [--metrics-listen HOST:PORT]
                                [--ca FILE --cert FILE --key FILE | --insecure]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import faulthandler
import gc
import logging
import signal
from collections.abc import Iterable

from presculpt.clitools import ArgumentParser, address, log_format_flag, run
from presculpt.coordinator.config import CoordinatorConfig, load_coordinator_config
from presculpt.coordinator.server import CoordinatorServer
from presculpt.coordinator.store.base import StoreError
from presculpt.sdnotify import SystemdNotifier
from presculpt.tls import tls_flags

PROG = "presculpt-coordinator"
USER_ERRORS = (StoreError, OSError)
log = logging.getLogger(__name__)


def _config(args: argparse.Namespace) -> CoordinatorConfig:
    cfg = load_coordinator_config(args.config)
    overrides = {k: v for k, v in (("listen", args.listen), ("db", args.db),
                                   ("metrics_listen", args.metrics_listen)) if v}
    overrides["tls"] = cfg.tls.with_overrides(args.ca, args.cert, args.key, args.insecure)
    return dataclasses.replace(cfg, **overrides)


async def _serve(cfg: CoordinatorConfig) -> None:
    notifier = SystemdNotifier.from_environment()
    if notifier.enabled:
        faulthandler.enable()  # a watchdog abort (SIGABRT) logs where every thread was stuck
    server = CoordinatorServer(cfg)
    await server.start()
    # Ingest allocates tens of thousands of short-lived tuples a second, none in reference cycles:
    # move what start-up built out of the collector's way and collect young objects less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Under systemd (Type=notify): ready once listening with the jobs scheduled, and the watchdog
    # pinged from this event loop, so that a stalled loop gets the coordinator restarted.
    notifier.ready(f"listening on {cfg.listen.rpartition(':')[0]}:{server.port}, store {cfg.db}")
    watchdog = None
    if notifier.watchdog_interval_s is not None:
        watchdog = asyncio.create_task(_ping_watchdog(notifier, notifier.watchdog_interval_s))
    await stop.wait()
    log.info("stopping on signal")
    notifier.stopping("stopping")
    if watchdog is not None:
        watchdog.cancel()
    await server.stop()


async def _ping_watchdog(notifier: SystemdNotifier, interval_s: float) -> None:
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval_s)


def cmd_serve(args: argparse.Namespace) -> int:
    asyncio.run(_serve(_config(args)))
    return 0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Presculpt's coordinator: stores metrics, commands agents.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    p = sub.add_parser("serve", help="run the coordinator")
    p.add_argument("--listen", type=address, help="gRPC address HOST:PORT (default: config, 127.0.0.1:7600)")
    p.add_argument("--db", help="SQLite store file (default: config, ./presculpt.db)")
    p.add_argument("--config", help="coordinator config file (TOML; see config/coordinator.sample.toml)")
    p.add_argument("--metrics-listen", type=address, help="serve Prometheus metrics on HOST:PORT")
    tls_flags(p, "agents and operators")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    log_format_flag(p)
    p.set_defaults(func=cmd_serve, progress=True)
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    return run(PROG, build_parser(), argv, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
