"""How the daemons log: human lines on a terminal, one logfmt line per event under systemd.

    human    2026-11-28 12:00:00,123 INFO presculpt.agent.cli: agent h1 on qemu:///system: ...
    logfmt   <6>level=info logger=presculpt.agent.cli msg="agent h1 on qemu:///system: ..."

Under systemd (stderr is the journal stream named by ``$JOURNAL_STREAM``) each logfmt line starts
with its syslog priority (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug), which
journald strips and stores as the entry's priority, so ``journalctl -p warning`` works; the journal
keeps the time. Elsewhere logfmt lines carry ``ts=`` instead of the prefix. Fields given as
``extra={...}`` follow ``msg``; an exception's traceback is one ``exc=`` field, so every event is one
line.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Literal

LogFormat = Literal["auto", "human", "logfmt"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "human", "logfmt")
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# syslog priorities (sd-daemon(3)): what journald reads from a "<N>" line prefix.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_BARE = re.compile(r"^[^\s=\"\\]+$")


def syslog_priority(levelno: int) -> int:
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return 7


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether ``fd`` is the journal stream systemd connected (``$JOURNAL_STREAM`` is its
    ``device:inode``; a child whose stderr was redirected does not match)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(fd)
        return (int(device), int(inode)) == (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        return False


def logfmt_value(value: object) -> str:
    """A value as logfmt writes it: bare when it can be, else quoted with escapes, on one line."""
    text = str(value)
    if text and _BARE.match(text):
        return text
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """One ``key=value`` line per record: level, logger, msg, extra fields, then exc."""

    def __init__(self, priority_prefix: bool = False, timestamps: bool = True):
        super().__init__()
        self.priority_prefix = priority_prefix
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        fields: list[tuple[str, object]] = []
        if self.timestamps:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            fields.append(("ts", f"{stamp}.{int(record.msecs):03d}Z"))
        fields += [("level", record.levelname.lower()), ("logger", record.name), ("msg", record.getMessage())]
        fields += [(k, v) for k, v in vars(record).items() if k not in _RECORD_FIELDS and not k.startswith("_")]
        if record.exc_info:
            fields.append(("exc", self.formatException(record.exc_info)))
        if record.stack_info:
            fields.append(("stack", self.formatStack(record.stack_info)))
        line = " ".join(f"{key}={logfmt_value(value)}" for key, value in fields)
        return f"<{syslog_priority(record.levelno)}>{line}" if self.priority_prefix else line


def make_formatter(log_format: LogFormat, environ: Mapping[str, str] | None = None) -> logging.Formatter:
    """The formatter for ``log_format``; ``auto`` is logfmt under systemd's journal, else human."""
    journal = stderr_is_journal(environ)
    if log_format == "logfmt" or (log_format == "auto" and journal):
        return LogfmtFormatter(priority_prefix=journal, timestamps=not journal)
    return logging.Formatter(HUMAN_FORMAT)
