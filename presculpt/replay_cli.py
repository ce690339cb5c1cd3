"""``presculpt replay``: the planner and today's autoscalers on a real trace, scored the same way.

    presculpt replay --trace DIR --policy NAMES|all [--json FILE] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from presculpt.clitools import positive_float, to_jsonable
from presculpt.errors import UserError
from presculpt import forecast_cli
from presculpt.forecast_cli import EXIT_BAD_INPUT, progress_line

COLUMNS = (("violation", "VIOLATION", "{:.2%}"), ("unmet", "UNMET", "{:.2%}"), ("slack", "SLACK", "{:.1%}"),
           ("resizes_per_vm_day", "RESIZES/VM-DAY", "{:.2f}"))


def add_replay_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay", help="replay a trace against the planner and today's autoscalers",
        description="Drive a simulated hypervisor from a trace in the canonical format (traces/FORMAT.md) "
                    "and run each policy on it: the allocation of every 5-minute step is decided from data "
                    "before it. Scores, after each VM's warm-up: violation (share of steps with demand "
                    "above the allocation), unmet demand, slack (share of the allocation not used) and "
                    "resizes per VM-day, for CPU and memory. The presculpt policy trains its forecaster on "
                    "the warm-up and retrains it on schedule, so it takes minutes; progress goes to stderr.")
    p.add_argument("--trace", required=True, metavar="DIR", help="a trace directory (vms.csv and usage.csv.gz)")
    p.add_argument("--policy", default="all", metavar="NAMES",
                   help="comma-separated: presculpt, static, reactive, vpa, autopilot; or all (default). "
                        "hindsight-DURATION (30m, 12h) adds a bound that sees DURATION ahead: not a "
                        "policy, never in all")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="also draw demand against each policy's allocation")
    p.add_argument("--model", metavar="CHECKPOINT",
                   help="start the forecaster from this checkpoint (trained on other traces)")
    p.add_argument("--warmup-days", type=positive_float, default=7.0, metavar="DAYS",
                   help="each VM's first days, learned from but not scored (default 7)")
    p.add_argument("--retrain-days", type=positive_float, default=7.0, metavar="DAYS",
                   help="retrain the forecaster this often during the replay (default 7)")
    p.add_argument("--days", type=positive_float, metavar="DAYS", help="replay only the first DAYS of the trace")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    p.set_defaults(func=cmd_replay, progress=True)


def cmd_replay(args: argparse.Namespace) -> int:
    from presculpt.coordinator.replay.run import parse_policies, run_replay

    try:
        policies = parse_policies(args.policy)
        check_paths(args)
        forecast_config = None
        if "presculpt" in policies:  # the forecaster (and torch) only when it runs
            from presculpt.coordinator.replay.forecasts import ReplayForecastConfig

            forecast_config = ReplayForecastConfig(retrain_days=args.retrain_days)
        result = run_replay(args.trace, policies, warmup_days=args.warmup_days, max_days=args.days,
                            forecast_config=forecast_config, initial_model=args.model, plot=args.plot,
                            progress=progress_line(time.monotonic()))
    except UserError as err:
        from presculpt.cli import PROG

        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.plot:
        print(f"drew {args.plot}")
    return 0


def check_paths(args: argparse.Namespace) -> None:
    forecast_cli.check_paths(args, outputs=("json", "plot"))
    if args.model and not Path(args.model).is_file():
        raise UserError(f"--model {args.model}: no such file")


def report(result: dict[str, Any]) -> str:
    from presculpt.coordinator.replay.run import hindsight_steps

    lines = [f"{result['trace']}: {result['vms']} VMs, {result['days']:.1f} days, scored after "
             f"{result['warmup_days']:g} days of warm-up"]
    for metric, title in (("cpu", "CPU (cores)"), ("memory", "memory (MiB)")):
        rows = {n: p[metric] for n, p in result["policies"].items() if metric in p}
        if not rows:
            continue
        lines += ["", title]
        width = max(10, *map(len, rows))
        header = ["POLICY".ljust(width)] + [h.rjust(14) for _, h, _ in COLUMNS]
        lines.append(" ".join(header))
        for name, s in rows.items():
            lines.append(" ".join([name.ljust(width)] + [fmt.format(s[k]).rjust(14) for k, _, fmt in COLUMNS]))
    lines.append("")
    if any(hindsight_steps(n) for n in result["policies"]):
        lines.append("hindsight-*: each step gets the peak demand of the window ahead of it (it reads the "
                     "future): a bound, not a policy")
    lines.append(f"CPU demand above the VM's maximum (no policy can serve it): "
                 f"{result['cpu_demand_above_maximum']:.2%} of scored steps")
    if "presculpt" in result:
        d = result["presculpt"]
        acts = ", ".join(f"{k} {v}" for k, v in d["actions"].items()) or "none"
        lines.append(f"presculpt: {d['trainings']} forecaster trainings ({d['train_seconds']:.0f} s); actions: {acts}")
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items())
    lines.append(f"time: {secs}; total {result['total_seconds']:.0f} s")
    return "\n".join(lines)
