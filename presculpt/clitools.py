"""Shared plumbing of Presculpt's command lines: parsing, one-line errors, tables and JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from presculpt.errors import UserError
from presculpt.logformat import LOG_FORMATS, LogFormat, make_formatter


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above zero, got {text}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected zero or more, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above zero, got {text}")
    return value


def address(text: str) -> str:
    """HOST:PORT (port 0 picks a free one when listening)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and mappings to plain JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_json(value: Any) -> None:
    json.dump(to_jsonable(value), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain aligned text table; ``columns`` are (key, header) pairs."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    body = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    headers = [header for _, header in columns]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in body]
    return "\n".join(lines)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    print(format_table(rows, columns))


def configure_logging(verbose: bool, progress: bool = False, log_format: LogFormat = "human") -> None:
    """Warnings only for one-shot commands; progress (INFO) for long ones; DEBUG with -v. The
    daemons' ``--log-format`` picks the line format (see :mod:`presculpt.logformat`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO if progress else logging.WARNING,
                        handlers=[handler])
    if log_format != "human":
        logging.captureWarnings(True)  # Python's warnings as log lines too, one line each


def log_format_flag(parser: argparse.ArgumentParser) -> None:
    """The daemons' ``--log-format``: human on a terminal, logfmt under systemd's journal."""
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="auto",
                        help="log line format: human, or logfmt (one key=value line per event, with its "
                             "syslog priority for the journal); auto (default): logfmt under systemd")


def run(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: Iterable[str] | None,
    user_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Parse ``argv`` and call ``args.func(args)``; expected errors become one line on stderr."""
    args = parser.parse_args(None if argv is None else list(argv))
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    configure_logging(getattr(args, "verbose", False), getattr(args, "progress", False),
                      getattr(args, "log_format", "human"))
    try:
        return int(func(args) or 0)
    except (UserError, *user_errors) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
