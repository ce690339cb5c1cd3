"""``presculpt demo``: the main job. Real guests, each driven by a real VM of the trace in compressed
time, forecast and reshaped live by the coordinator's planner through an agent; a live view; and,
at the end, the figures next to static allocation, a picture per guest and ``--json FILE``.

    scenario.py  which trace VMs, which window, at what scale (pure)
    model.py     the small LSTM trained on the history before the window, cached
    stack.py     the coordinator and the agent of the demo, on the trace clock
    record.py    what happened: allocations, the guests' own reports, actions; seen-inside judgement
    summary.py   violation and slack against static allocation; the JSON
    view.py      the live view (a table on a terminal, plain lines otherwise)
    plot.py      the pictures
    run.py       the run, as named steps, with a teardown whatever happens
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from presculpt.clitools import positive_float, positive_int
from presculpt.lab.image import DEFAULT_CACHE_DIR

DESCRIPTION = """\
Boot a lab of tiny real guests here, drive each one's CPU and memory from a different real VM of the
trace (one 5-minute step every --step-seconds), and run the coordinator (forecaster and planner in
enforce mode) and an agent against them: the planner pre-sculpts and downgrades the guests ahead of
the forecast demand. A live view shows each guest's demand, forecast, allocation and last action.
After --duration seconds of replay it prints violations, slack and actions next to static
allocation, writes a picture per guest into --out, and removes the guests (unless --keep).
"""


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: real guests forecast and reshaped live on this machine",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=positive_float, default=300.0, metavar="SECONDS",
                   help="seconds of replay (default 300); booting and training come on top")
    p.add_argument("--step-seconds", "--seconds-per-step", dest="step_seconds", type=positive_float, default=3.0,
                   metavar="SECONDS", help="wall seconds per 5-minute trace step (default 3: 100x)")
    p.add_argument("--guests", type=positive_int, default=3, help="lab guests, one per trace VM (default 3)")
    p.add_argument("--vms", metavar="ID,ID,...",
                   help="the trace VMs to replay (default: those with the most demand variation that repeats daily)")
    p.add_argument("--trace", help="trace directory in the canonical format (default: the shared Bitbrains trace)")
    p.add_argument("--start-days", type=float, default=14.25, metavar="DAYS",
                   help="where the replayed window starts, in days after the trace's start (default 14.25)")
    p.add_argument("--uri", default="qemu:///system", help="libvirt URI (default qemu:///system)")
    p.add_argument("--accel", choices=("tcg", "kvm"), default="tcg", help="guest acceleration (default tcg)")
    p.add_argument("--keep", action="store_true", help="leave the guests running at the end")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR),
                   help=f"where the lab keeps its image and the demo its trained model (default {DEFAULT_CACHE_DIR})")
    p.add_argument("--out", default="presculpt-demo", metavar="DIR",
                   help="where the pictures and the log go (default ./presculpt-demo)")
    p.add_argument("--json", metavar="FILE", help="also write actions, figures and steps as JSON to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from presculpt.demo.run import Demo, DemoOptions, configure_logs
    from presculpt.errors import UserError

    vms = tuple(v.strip() for v in (args.vms or "").split(",") if v.strip())
    if vms and len(vms) != args.guests and args.guests != 3:
        raise UserError(f"--vms names {len(vms)} VM(s) but --guests asks for {args.guests}")
    out_dir = Path(args.out)
    configure_logs(out_dir / "demo.log", args.verbose, sys.stdout.isatty())
    options = DemoOptions(uri=args.uri, accel=args.accel, guests=len(vms) or args.guests, vms=vms,
                          trace=Path(args.trace) if args.trace else None, start_days=args.start_days,
                          duration_s=args.duration, step_seconds=args.step_seconds, keep=args.keep,
                          cache_dir=Path(args.cache_dir), out_dir=out_dir,
                          json_path=Path(args.json) if args.json else None)
    print(f"log: {out_dir / 'demo.log'}", flush=True)
    result = Demo(options).run()
    return 130 if result.get("interrupted") else 0
