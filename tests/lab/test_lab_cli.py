"""``presculpt lab`` argument handling (no guests booted here)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from presculpt.agent.hypervisor.base import HypervisorError
from presculpt.clitools import ArgumentParser, run
from presculpt.errors import UserError
from presculpt.lab.cli import add_lab_commands, build_loads


def parser() -> ArgumentParser:
    top = ArgumentParser(prog="presculpt")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    add_lab_commands(sub)
    return top


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    (tmp_path / "vms.csv").write_text(
        "vm_id,max_vcpus,max_mem_mib\nvm-a,2,1024\nvm-b,1,2048\nvm-c,1,\n"
    )
    with gzip.open(tmp_path / "usage.csv.gz", "wt") as handle:
        handle.write("vm_id,ts,cpu_cores,mem_mib\n")
        for vm in ("vm-a", "vm-b", "vm-c"):
            for i in range(4):
                handle.write(f"{vm},{300 * i},{0.25 * (i + 1)},{100 * (i + 1)}\n")
    return tmp_path


def test_constant_load_flags() -> None:
    args = parser().parse_args(
        ["lab", "up", "--guests", "3", "--cpu-cores", "1.5", "--mem-mib", "64"]
    )
    loads = build_loads(args)
    assert len(loads) == 3
    assert {(s.steps[0].cpu_cores, s.steps[0].mem_mib) for s in loads} == {(1.5, 64)}
    assert args.uri == "qemu:///system" and args.accel == "tcg" and not args.json


def test_trace_flags_pick_the_first_vms_and_scale(trace_dir: Path) -> None:
    args = parser().parse_args(
        [
            "lab",
            "up",
            "--trace",
            str(trace_dir),
            "--speedup",
            "0.5",
            "--steps",
            "2",
            "--start-offset-s",
            "300",
            "--guest-mem-budget-mib",
            "512",
        ]
    )
    loads = build_loads(args)
    assert [spec.label for spec in loads] == ["trace:vm-a@300", "trace:vm-b@300"]
    a = loads[0]
    assert a.seconds_per_step == 0.5 and len(a.steps) == 2
    assert a.steps[0].cpu_cores == pytest.approx(0.5 / 2 * 4)
    assert a.steps[0].mem_mib == round(200 / 1024 * 512)


def test_trace_flags_with_chosen_vms(trace_dir: Path) -> None:
    args = parser().parse_args(
        ["lab", "up", "--guests", "1", "--trace", str(trace_dir), "--vm", "vm-c"]
    )
    (load,) = build_loads(args)
    assert load.label.startswith("trace:vm-c@") and load.steps[0].mem_mib == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--vm", "vm-a"], "--vm needs --trace"),
        (["--trace", "{trace}", "--cpu-cores", "1"], "not both"),
        (["--trace", "{trace}", "--guests", "4"], "3 trace VM(s) for 4 guest(s)"),
        (["--trace", "{trace}", "--guests", "1", "--vm", "nope"], "'nope' is not in"),
        (["--trace", "{trace}", "--start-offset-s", "99999"], "past the end"),
    ],
)
def test_bad_load_flags(trace_dir: Path, argv: list[str], message: str) -> None:
    args = parser().parse_args(["lab", "up", *[a.format(trace=trace_dir) for a in argv]])
    with pytest.raises(UserError, match=re.escape(message)):
        build_loads(args)


def test_user_errors_are_one_line(capsys) -> None:
    assert run("presculpt", parser(), ["lab"], (HypervisorError,)) == 1
    assert capsys.readouterr().err == "presculpt: error: choose a lab command: up, status or down\n"
    assert (
        run(
            "presculpt", parser(), ["lab", "status", "--uri", "test:///nowhere"], (HypervisorError,)
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "test:///nowhere" in err
    with pytest.raises(SystemExit) as exit_info:
        run("presculpt", parser(), ["lab", "up", "--accel", "xen"], ())
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
