#!/usr/bin/env python3
"""Set keys of a commented TOML config in place, the way an operator edits the installed sample:
``set-toml.py FILE KEY=VALUE...`` where KEY is ``name`` (top level) or ``section.name`` and VALUE is
TOML (``'"qemu:///system"'``, ``5.0``, ``true``). The key's existing line in its section is replaced;
a key that is not there is added at the end of its section. Comments and everything else stay."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*(#.*)?$")


def set_key(lines: list[str], section: str, name: str, value: str) -> list[str]:
    current, start, end, found = "", None, len(lines), None
    for i, line in enumerate(lines):
        match = _SECTION.match(line)
        if match:
            if current == section and start is not None:
                end = i
                break
            current = match.group(1).strip()
            if current == section:
                start = i + 1
            continue
        if current == section and re.match(rf"^\s*{re.escape(name)}\s*=", line):
            found = i
    if section == "":
        start = 0
        end = next((i for i, line in enumerate(lines) if _SECTION.match(line)), len(lines))
    new = f"{name} = {value}\n"
    if found is not None:
        lines[found] = new
    elif start is not None:
        while end > start and not lines[end - 1].strip():
            end -= 1
        lines.insert(end, new)
    else:
        lines += ["\n", f"[{section}]\n", new]
    return lines


def main(argv: list[str]) -> int:
    path, assignments = Path(argv[0]), argv[1:]
    lines = path.read_text().splitlines(keepends=True)
    for assignment in assignments:
        key, value = assignment.split("=", 1)
        section, _, name = key.rpartition(".")
        lines = set_key(lines, section, name, value)
    text = "".join(lines)
    tomllib.loads(text)  # refuse to write a file the daemon could not read
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
