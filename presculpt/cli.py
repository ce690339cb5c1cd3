"""``presculpt``: the operator's command line.

    presculpt lab {up,status,down}     tiny real guests on this machine
    presculpt bench resize             resize and shadow-activation latency on a real guest
    presculpt demo                     the main job: the lab plus a live resize, seen from inside
"""

from __future__ import annotations

from collections.abc import Iterable

from presculpt.agent.guard import GuardRefused
from presculpt.agent.hypervisor.base import HypervisorError
from presculpt.agent.resize import ResizeFailed
from presculpt.agent.shadow import ShadowPoolError
from presculpt.clitools import ArgumentParser, run

PROG = "presculpt"
USER_ERRORS = (HypervisorError, GuardRefused, ResizeFailed, ShadowPoolError)


def build_parser() -> ArgumentParser:
    from presculpt.bench_ingest import add_ingest_bench
    from presculpt.bench_resize import add_resize_bench
    from presculpt.demo import add_demo_command
    from presculpt.lab.cli import add_lab_commands
    from presculpt.ops import add_operator_commands

    parser = ArgumentParser(prog=PROG, description="Presculpt: predictive resource shaping for KVM.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    add_operator_commands(sub)
    add_lab_commands(sub)
    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True, parser_class=ArgumentParser)
    add_ingest_bench(bench_sub)
    add_resize_bench(bench_sub)
    add_demo_command(sub)
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    return run(PROG, build_parser(), argv, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
