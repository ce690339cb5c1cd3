"""``presculpt forecast``: forecasts from the coordinator, and the offline evaluation.

    presculpt forecast VM [--since 6h] [--lead 1]    the same as ``presculpt forecast show VM``
    presculpt forecast accuracy [--host H]           online accuracy, overall and per VM (worst first)
    presculpt forecast aggregate [--customer NAME]   forecasts of each customer's and segment's demand
    presculpt forecast evaluate --trace DIR          backtest the LSTM against the baselines on a trace

The evaluation trains the LSTM on the first ``--train-days`` of every VM of a trace in the canonical
format (traces/FORMAT.md), forecasts every later step with the LSTM and each baseline, and prints
their scores. torch and the forecaster are imported only when the evaluation runs, so that the
rest of the command line starts quickly.
"""

from __future__ import annotations

import argparse
import os
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from presculpt.clitools import (
    ArgumentParser,
    format_table,
    positive_float,
    positive_int,
    to_jsonable,
)
from presculpt.errors import UserError

log = logging.getLogger(__name__)

SUBCOMMANDS = ("show", "evaluate", "accuracy", "aggregate")
HELP_FLAGS = ("-h", "--help")
EXIT_BAD_INPUT = 2  # a trace that cannot be evaluated is bad input, like a bad flag
PLOT_SUFFIXES = (".png", ".pdf", ".svg")
REPORT_LEGEND = (
    "  PINBALL: mean pinball loss over the quantiles, in the metric's units (lower is better; * the lowest)",
    "  MASE: mean absolute error of the median over that of 'the same step a day earlier' on the training part",
    "  COVER P90, P99: share of outcomes at or below the p90 and p99 forecasts (ideal 0.90 and 0.99)",
)
METRIC_TITLES = {"cpu_cores": "CPU (cores)", "memory_mib": "memory (MiB)"}

FORECAST_DESCRIPTION = """\
Quantile forecasts of each VM's demand, and of each customer's and segment's summed demand
(CPU cores and memory MiB, 5-minute steps, the next hour).

  presculpt forecast VM [--since 6h] [--lead 1] [--json]
      a VM's forecast band from a running coordinator next to what actually happened
      (the same as `presculpt forecast show VM`; a VM named like a subcommand needs `show`)
  presculpt forecast accuracy [--host H] [--top N] [--json]
      how well the served forecasts matched what happened: pinball loss and p90/p99 coverage
      for CPU and memory, overall and per VM, the worst first
  presculpt forecast aggregate [--customer NAME | --segment NAME] [--json]
      forecasts of the summed demand of each customer and segment (VM metadata keys
      "customer" and "segment"): all of them, or one's quantile band per step
  presculpt forecast evaluate --trace DIR [--json FILE] [--plot FILE.png] [--save CHECKPOINT]
      train the LSTM on the first days of a trace and backtest it against the baselines
"""


def default_to_show(argv: Sequence[str]) -> list[str]:
    """``presculpt forecast VM ...`` means ``presculpt forecast show VM ...``.

    argparse cannot have an optional subcommand next to a positional, so the word is inserted
    before parsing whenever the word after ``forecast`` is neither a subcommand nor a help flag.
    """
    args = list(argv)
    if len(args) >= 2 and args[0] == "forecast" and args[1] not in (*SUBCOMMANDS, *HELP_FLAGS):
        args.insert(1, "show")
    return args


def add_forecast_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``forecast show``, ``accuracy``, ``aggregate`` and ``evaluate`` to the ``presculpt`` command line."""
    from presculpt.ops import add_forecast_accuracy, add_forecast_aggregate, add_forecast_show

    forecast = sub.add_parser(
        "forecast", help="quantile forecasts, their accuracy and aggregates; evaluate the forecaster on a trace",
        description=FORECAST_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    forecast_sub = forecast.add_subparsers(dest="forecast_command", metavar="SUBCOMMAND",
                                           parser_class=ArgumentParser)

    def missing_subcommand(_args: argparse.Namespace) -> int:
        forecast.error("give a VM (presculpt forecast VM) or a subcommand: " + ", ".join(SUBCOMMANDS))

    forecast.set_defaults(func=missing_subcommand)
    add_forecast_show(forecast_sub)
    add_forecast_accuracy(forecast_sub)
    add_forecast_aggregate(forecast_sub)
    add_forecast_evaluate(forecast_sub)


def add_forecast_evaluate(forecast_sub: argparse._SubParsersAction) -> None:
    """``presculpt forecast evaluate --trace DIR``."""
    p = forecast_sub.add_parser(
        "evaluate", help="backtest the LSTM against the baselines on a trace",
        description="Train the LSTM on the first --train-days of every VM of a trace (canonical format, "
                    "see traces/FORMAT.md), then forecast every later 5-minute step with it and with each "
                    "baseline, using data before each forecast only. Prints, per model, the mean pinball "
                    "loss over the quantiles, the MASE of the median, the coverage of p90 and p99 and the "
                    "pinball loss per step ahead, for CPU and (where the trace has it) memory. "
                    "Takes minutes on a full trace; progress goes to stderr.")
    p.add_argument("--trace", required=True, metavar="DIR", help="a trace directory (vms.csv and usage.csv.gz)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    p.add_argument("--plot", metavar="FILE.png",
                   help="also draw the LSTM's band against what happened for a few VMs (.png, .pdf or .svg)")
    p.add_argument("--save", metavar="CHECKPOINT", help="also save the trained LSTM to CHECKPOINT")
    p.add_argument("--train-days", type=positive_float, default=21.0, metavar="DAYS",
                   help="days of each VM to train on; the rest is the test part (default 21)")
    p.add_argument("--validation-days", type=positive_float, default=2.0, metavar="DAYS",
                   help="last days of the training part held out for early stopping and calibration "
                        "(default 2)")
    p.add_argument("--epochs", type=positive_int, metavar="N", help="training epochs at most (default: the trainer's)")
    # For tests and quick looks: a smaller training run. Hidden because the defaults are what count.
    p.add_argument("--samples-per-epoch", type=positive_int, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1), metavar="N",
                   help="torch threads for training and the backtest (default: up to 2; an evaluation "
                        "has the machine to itself, a coordinator trains on one)")
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--hidden", type=positive_int, help=argparse.SUPPRESS)  # LSTM and head width
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    p.set_defaults(func=cmd_forecast_evaluate, progress=True)


def cmd_forecast_evaluate(args: argparse.Namespace) -> int:
    """Run the evaluation; a trace that cannot be evaluated is one line on stderr and exit code 2."""
    try:
        check_paths(args)
        result = evaluate(args)
    except UserError as err:
        from presculpt.cli import PROG

        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(evaluation_report(result))
    if args.json:
        write_json(Path(args.json), result)
        print(f"\nwrote {args.json}")
    if args.save:
        print(f"saved the trained LSTM to {args.save}")
    return 0


def check_paths(args: argparse.Namespace, outputs: tuple[str, ...] = ("json", "plot", "save")) -> None:
    """Refuse bad paths before training for minutes, not after: the trace directory, the plot's
    file type and the folders of the ``outputs`` flags."""
    trace = Path(args.trace)
    if not trace.is_dir():
        raise UserError(f"{trace} is not a directory (give a trace directory with vms.csv and usage.csv.gz)")
    if args.plot and Path(args.plot).suffix.lower() not in PLOT_SUFFIXES:
        raise UserError(f"--plot {args.plot}: the file name must end in {', '.join(PLOT_SUFFIXES)}")
    for flag in outputs:
        value = getattr(args, flag)
        if value and not Path(value).resolve().parent.is_dir():
            raise UserError(f"--{flag} {value}: folder {Path(value).resolve().parent} does not exist")


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Call ``run_evaluation`` with the flags given (unset flags keep the trainer's defaults)."""
    from presculpt.coordinator.forecast.evaluate import run_evaluation
    from presculpt.coordinator.forecast.lstm.module import ModelConfig
    from presculpt.coordinator.forecast.lstm.training import TrainConfig

    overrides = {name: getattr(args, name) for name in ("epochs", "samples_per_epoch", "threads", "seed")
                 if getattr(args, name) is not None}
    train_config = dataclasses.replace(TrainConfig(), **overrides)
    model_config = ModelConfig(hidden=args.hidden, head_hidden=2 * args.hidden) if args.hidden else None
    started = time.monotonic()
    result = run_evaluation(args.trace, train_days=args.train_days, train_config=train_config,
                            validation_days=args.validation_days, plot=args.plot,
                            progress=progress_line(started), model_config=model_config, save_model=args.save)
    log.info("evaluation done in %.0f s", time.monotonic() - started)
    return result


def progress_line(started: float) -> Callable[[str], None]:
    """Progress callback: each step on stderr with the seconds since the start."""

    def report(message: str) -> None:
        log.info("[%4.0f s] %s", time.monotonic() - started, message)

    return report


def write_json(path: Path, result: dict[str, Any]) -> None:
    """The evaluation's dict as it is: ``models`` (with ``lstm``), ``train_seconds``,
    ``infer_ms_per_1000_series`` and the trace's details; non-finite numbers become null."""
    path.write_text(json.dumps(to_jsonable(result), indent=2) + "\n")


# -- the report ------------------------------------------------------------------------------------
def number(value: Any, digits: int = 4) -> str:
    """``digits`` significant digits, never in exponent form above 1 (MiB losses run into thousands)."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    if abs(value) >= 10 ** digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def fixed(value: Any, decimals: int = 3) -> str:
    """Ratios (MASE, coverage) with a fixed number of decimals, so that columns line up."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value:.{decimals}f}"


def metric_scores(result: dict[str, Any], metric: str) -> dict[str, dict[str, Any]]:
    """Each model's scores on ``metric``: CPU at the top of each entry, memory under ``memory``."""
    out = {}
    for name, entry in result["models"].items():
        scores = entry if metric == "cpu_cores" else entry.get("memory")
        if scores and "pinball" in scores:
            out[name] = scores
    return out


def score_table(scores: dict[str, dict[str, Any]]) -> str:
    best = min(scores, key=lambda name: scores[name]["pinball"])
    rows = [{
        "model": name + (" *" if name == best else ""),
        "pinball": number(s["pinball"]),
        "mase": fixed(s.get("mase")),
        "coverage_p90": fixed(s.get("coverage_p90")),
        "coverage_p99": fixed(s.get("coverage_p99")),
        "forecasts": f"{s['forecasts']:,}" if "forecasts" in s else "-",
    } for name, s in scores.items()]
    return format_table(rows, [("model", "MODEL"), ("pinball", "PINBALL"), ("mase", "MASE"),
                               ("coverage_p90", "COVER P90"), ("coverage_p99", "COVER P99"),
                               ("forecasts", "FORECASTS")])


def horizon_table(scores: dict[str, dict[str, Any]], step_s: float) -> str:
    """Pinball loss per step ahead, one column per step (``+5m`` .. ``+60m``)."""
    horizon = max((len(s.get("pinball_by_horizon", ())) for s in scores.values()), default=0)
    columns = [("model", "MODEL")] + [(f"h{h}", f"+{(h + 1) * step_s / 60:g}m") for h in range(horizon)]
    rows = []
    for name, s in scores.items():
        row = {"model": name}
        row.update({f"h{h}": number(v, 3) for h, v in enumerate(s.get("pinball_by_horizon", ()))})
        rows.append(row)
    return format_table(rows, columns)


def evaluation_report(result: dict[str, Any]) -> str:
    """The evaluation as text: per metric a score table and the loss per step ahead, then the
    training and inference times and how much the LSTM improves on the best baseline."""
    from presculpt.coordinator.forecast.base import STEP_S
    from presculpt.coordinator.forecast.evaluate import improvement

    lines = [f"forecast evaluation of {result.get('trace', 'the trace')}: {result.get('series', '?')} series, "
             f"trained on the first {result.get('train_days', '?'):g} days, "
             f"{result.get('horizon', '?')} steps of {STEP_S / 60:g} min ahead, quantiles "
             + ", ".join(f"p{round(q * 100):02d}" for q in result.get("quantiles", ())),
             *REPORT_LEGEND]
    gains = []
    for metric, title in METRIC_TITLES.items():
        scores = metric_scores(result, metric)
        if not scores:
            continue
        lines += ["", title, score_table(scores), "", f"{title}: pinball loss by step ahead",
                  horizon_table(scores, STEP_S)]
        if "lstm" in scores and len(scores) > 1:
            baseline, gain = improvement(result, None if metric == "cpu_cores" else "memory")
            gains.append(f"{abs(gain) * 100:.1f}% {'lower' if gain >= 0 else 'HIGHER'} than {baseline} "
                         f"on {title.split(' ')[0]}")
    lines += ["", f"training: {number(result.get('train_seconds'))} s; inference: "
                  f"{number(result.get('infer_ms_per_1000_series'))} ms per 1000 series"]
    if gains:
        lines.append("LSTM pinball loss against the best baseline: " + "; ".join(gains))
    return "\n".join(lines)
