"""``presculpt``: the operator's command line.

    presculpt lab {up,status,down}     tiny real guests on this machine
    presculpt forecast VM              a VM's quantile forecast next to what happened (forecast show)
    presculpt forecast evaluate        backtest the forecaster against the baselines on a trace
    presculpt forecast accuracy        online forecast accuracy, overall and per VM
    presculpt forecast aggregate       forecasts per customer and per segment
    presculpt replay                   the planner and today's autoscalers on a real trace
    presculpt bench resize             resize and shadow-activation latency on a real guest
    presculpt bench forecast           how fast the forecaster predicts for many series
    presculpt demo                     the main job: real guests forecast and reshaped live (make demo)
    presculpt certs {init,issue}       a CA and certificates for mutual TLS
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from presculpt.agent.guard import GuardRefused
from presculpt.agent.hypervisor.base import HypervisorError
from presculpt.agent.resize import ResizeFailed
from presculpt.agent.shadow import ShadowPoolError
from presculpt.clitools import ArgumentParser, run

PROG = "presculpt"
USER_ERRORS = (HypervisorError, GuardRefused, ResizeFailed, ShadowPoolError)


def build_parser() -> ArgumentParser:
    from presculpt.bench_bounds import add_peak_bound_bench
    from presculpt.bench_forecast import add_forecast_bench
    from presculpt.bench_ingest import add_ingest_bench
    from presculpt.bench_resize import add_resize_bench
    from presculpt.certs import add_certs_commands
    from presculpt.demo import add_demo_command
    from presculpt.forecast_cli import add_forecast_commands
    from presculpt.lab.cli import add_lab_commands
    from presculpt.ops import add_operator_commands
    from presculpt.replay_cli import add_replay_command

    parser = ArgumentParser(prog=PROG, description="Presculpt: predictive resource shaping for KVM.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    add_operator_commands(sub)
    add_forecast_commands(sub)
    add_lab_commands(sub)
    add_replay_command(sub)
    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True, parser_class=ArgumentParser)
    add_forecast_bench(bench_sub)
    add_ingest_bench(bench_sub)
    add_peak_bound_bench(bench_sub)
    add_resize_bench(bench_sub)
    add_demo_command(sub)
    add_certs_commands(sub)
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    from presculpt.forecast_cli import default_to_show

    args = default_to_show(sys.argv[1:] if argv is None else list(argv))
    return run(PROG, build_parser(), args, USER_ERRORS)


if __name__ == "__main__":
    raise SystemExit(main())
