"""Log lines for the journal: one logfmt line per event, with its syslog priority under systemd."""

from __future__ import annotations

import logging
import os

import pytest

from presculpt.logformat import LogfmtFormatter, logfmt_value, make_formatter, stderr_is_journal, syslog_priority


def record(level: int, msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    rec = logging.getLogger("presculpt.agent.runner").makeRecord(
        "presculpt.agent.runner", level, __file__, 1, msg, args, exc_info, extra=extra or None)
    rec.created, rec.msecs = 1_800_000_000.25, 250.0
    return rec


@pytest.mark.parametrize("level, priority", [(logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                                             (logging.INFO, 6), (logging.DEBUG, 7), (5, 7)])
def test_syslog_priorities(level, priority):
    assert syslog_priority(level) == priority


@pytest.mark.parametrize("value, text", [
    ("plain", "plain"), ("two words", '"two words"'), ("", '""'), ('say "hi"', '"say \\"hi\\""'),
    ("a=b", '"a=b"'), ("line\nbreak", '"line\\nbreak"'), (1.5, "1.5"), ("back\\slash", '"back\\\\slash"'),
])
def test_values(value, text):
    assert logfmt_value(value) == text


def test_journal_line_has_priority_and_no_time():
    line = LogfmtFormatter(priority_prefix=True, timestamps=False).format(
        record(logging.WARNING, "step %s: %s", "sample", "libvirt gone", vm="web-1", tries=3))
    assert line == ('<4>level=warning logger=presculpt.agent.runner msg="step sample: libvirt gone" '
                    'vm=web-1 tries=3')


def test_file_line_has_time_and_no_priority():
    line = LogfmtFormatter().format(record(logging.INFO, "started"))
    assert line == "ts=2027-01-15T08:00:00.250Z level=info logger=presculpt.agent.runner msg=started"


def test_an_exception_stays_on_one_line():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        import sys
        line = LogfmtFormatter(priority_prefix=True, timestamps=False).format(
            record(logging.ERROR, "failed", exc_info=sys.exc_info()))
    assert "\n" not in line and line.startswith("<3>level=error")
    assert 'exc="Traceback (most recent call last):\\n' in line and "ValueError: bad\\nvalue" in line


def test_journal_stream_must_be_stderr_itself(tmp_path):
    with open(tmp_path / "log", "w") as handle:
        st = os.fstat(handle.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(env, fd=handle.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, fd=handle.fileno())
        assert not stderr_is_journal({}, fd=handle.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "nonsense"}, fd=handle.fileno())


def test_auto_is_human_off_the_journal():
    assert not isinstance(make_formatter("auto", {}), LogfmtFormatter)
    forced = make_formatter("logfmt", {})
    assert isinstance(forced, LogfmtFormatter) and forced.timestamps and not forced.priority_prefix
