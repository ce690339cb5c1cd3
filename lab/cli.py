"""``presculpt lab up|status|down``: tiny real guests on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from presculpt.clitools import (
    ArgumentParser,
    non_negative_int,
    positive_float,
    positive_int,
    print_json,
    print_table,
)
from presculpt.errors import UserError
from presculpt.lab.image import DEFAULT_CACHE_DIR
from presculpt.lab.lab import DEFAULT_READY_TIMEOUT_S, GuestShape, Lab, ensure_libvirt_running
from presculpt.lab.loadspec import LoadSpec, constant_load, trace_load
from presculpt.lab.trace import load_trace, read_vms

DEFAULT_URI = "qemu:///system"

STATUS_COLUMNS = (
    ("name", "NAME"),
    ("state", "STATE"),
    ("vcpus", "VCPUS"),
    ("guest_cpus", "GUEST_CPUS"),
    ("cpu_quota_cores", "QUOTA"),
    ("memory_mib", "MEM_MIB"),
    ("guest_mem_total_mib", "GUEST_MEMTOTAL"),
    ("guest_mem_available_mib", "GUEST_AVAIL"),
    ("demand_cores", "DEMAND_CORES"),
    ("load_cores", "LOAD_CORES"),
    ("work_rate", "WORK_RATE"),
    ("demand_mem_mib", "DEMAND_MIB"),
    ("mem_held_mib", "HELD_MIB"),
    ("report_age_s", "AGE_S"),
)


def add_lab_commands(subparsers: Any) -> None:
    """Register ``lab up``, ``lab status`` and ``lab down`` (each sets ``func``)."""
    lab = subparsers.add_parser(
        "lab",
        help="tiny real guests on this machine",
        description="Boot, inspect and remove lab guests (presculpt-lab-1..N) that run guestd.",
    )
    lab.set_defaults(func=_missing_command)
    commands = lab.add_subparsers(
        dest="lab_command", metavar="COMMAND", parser_class=ArgumentParser
    )

    up = commands.add_parser(
        "up",
        help="replace the lab by N new guests and wait until they are ready",
        description="Replace any lab guests by N new ones, each generating a constant load or "
        "the load of one VM of a trace, and wait until each reports READY.",
    )
    _common(up)
    up.add_argument("--guests", type=positive_int, default=2, help="number of guests (default 2)")
    up.add_argument(
        "--accel",
        choices=("tcg", "kvm"),
        default="tcg",
        help="tcg (emulation, works anywhere) or kvm (default tcg)",
    )
    const = up.add_argument_group("constant load")
    const.add_argument(
        "--cpu-cores",
        type=_non_negative_float,
        default=None,
        help="CPU demand of every guest in cores (default 0)",
    )
    const.add_argument(
        "--mem-mib",
        type=non_negative_int,
        default=None,
        help="memory every guest holds, MiB (default 0)",
    )
    trace = up.add_argument_group("load from a trace (canonical format)")
    trace.add_argument("--trace", type=Path, metavar="DIR", help="trace directory")
    trace.add_argument(
        "--vm",
        action="append",
        metavar="VM_ID",
        default=None,
        help="trace VM per guest, in order (repeat; default: the first VMs)",
    )
    trace.add_argument(
        "--speedup",
        type=positive_float,
        default=2.0,
        metavar="SECONDS_PER_STEP",
        help="guest seconds per trace sample (default 2)",
    )
    trace.add_argument(
        "--start-offset-s",
        type=_non_negative_float,
        default=0.0,
        help="start this many trace seconds after each VM's first sample",
    )
    trace.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="replay at most this many samples (default: all)",
    )
    trace.add_argument(
        "--guest-mem-budget-mib",
        type=positive_int,
        default=256,
        help="guest memory standing for the VM's full max_mem_mib (default 256)",
    )
    trace.add_argument("--repeat", action="store_true", help="start over after the last sample")
    shape = up.add_argument_group("guest size")
    defaults = GuestShape()
    shape.add_argument("--vcpus", type=positive_int, default=defaults.vcpus)
    shape.add_argument("--max-vcpus", type=positive_int, default=defaults.max_vcpus)
    shape.add_argument("--memory-mib", type=positive_int, default=defaults.memory_mib)
    shape.add_argument("--max-memory-mib", type=positive_int, default=defaults.max_memory_mib)
    up.add_argument("--ready-timeout-s", type=positive_float, default=DEFAULT_READY_TIMEOUT_S)
    up.set_defaults(func=_up, progress=True)

    status = commands.add_parser("status", help="libvirt's and each guest's own view of the lab")
    _common(status)
    status.set_defaults(func=_status)

    down = commands.add_parser("down", help="destroy and undefine every lab guest")
    _common(down)
    down.set_defaults(func=_down, progress=True)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uri", default=DEFAULT_URI, help=f"libvirt URI (default {DEFAULT_URI})")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help=f"where images and guest files live (default {DEFAULT_CACHE_DIR})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")


def _missing_command(_args: argparse.Namespace) -> int:
    raise UserError("choose a lab command: up, status or down")


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected zero or more, got {text}")
    return value


def _open_lab(args: argparse.Namespace) -> Lab:
    from presculpt.agent.hypervisor.libvirt import LibvirtHypervisor

    ensure_libvirt_running(args.uri)
    hypervisor = LibvirtHypervisor(args.uri)
    hypervisor.connect()
    return Lab(hypervisor, cache_dir=args.cache_dir)


def build_loads(args: argparse.Namespace) -> list[LoadSpec]:
    """One load spec per guest from the ``lab up`` flags."""
    if args.trace is None:
        if args.vm:
            raise UserError("--vm needs --trace")
        return [constant_load(args.cpu_cores or 0.0, args.mem_mib or 0)] * args.guests
    if args.cpu_cores is not None or args.mem_mib is not None:
        raise UserError("give either --trace or --cpu-cores/--mem-mib, not both")
    vm_ids = args.vm or [shape.vm_id for shape in read_vms(args.trace)][: args.guests]
    if len(vm_ids) != args.guests:
        raise UserError(
            f"{len(vm_ids)} trace VM(s) for {args.guests} guest(s); give one --vm per guest"
        )
    traces = load_trace(args.trace, vm_ids)
    try:
        return [
            trace_load(
                traces[vm_id],
                seconds_per_step=args.speedup,
                guest_max_vcpus=args.max_vcpus,
                guest_mem_budget_mib=args.guest_mem_budget_mib,
                start_offset_s=args.start_offset_s,
                max_steps=args.steps,
                repeat=args.repeat,
            )
            for vm_id in vm_ids
        ]
    except ValueError as err:
        raise UserError(str(err)) from None


def _up(args: argparse.Namespace) -> int:
    loads = build_loads(args)
    try:
        shape = GuestShape(args.vcpus, args.max_vcpus, args.memory_mib, args.max_memory_mib)
        if not (
            1 <= shape.vcpus <= shape.max_vcpus and 64 <= shape.memory_mib <= shape.max_memory_mib
        ):
            raise ValueError(
                "need 1 <= --vcpus <= --max-vcpus and 64 <= --memory-mib <= --max-memory-mib"
            )
    except ValueError as err:
        raise UserError(str(err)) from None
    lab = _open_lab(args)
    try:
        lab.up(
            args.guests,
            accel=args.accel,
            loads=loads,
            shape=shape,
            ready_timeout_s=args.ready_timeout_s,
        )
        rows = lab.status()
    finally:
        lab.hypervisor.close()
    _print_rows(args, rows)
    return 0


def _status(args: argparse.Namespace) -> int:
    lab = _open_lab(args)
    try:
        rows = lab.status()
    finally:
        lab.hypervisor.close()
    _print_rows(args, rows)
    return 0


def _down(args: argparse.Namespace) -> int:
    lab = _open_lab(args)
    try:
        removed = lab.down()
    finally:
        lab.hypervisor.close()
    if args.json:
        print_json({"removed": removed})
    else:
        print("\n".join(f"removed {name}" for name in removed) or "no lab guests")
    return 0


def _print_rows(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    if args.json:
        print_json(rows)
    elif rows:
        print_table(rows, STATUS_COLUMNS)
    else:
        print("no lab guests (presculpt lab up)")
