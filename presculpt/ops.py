"""The operator's commands against a running coordinator (its client API over gRPC):

    presculpt hosts                       every host, connected or not
    presculpt vms [--host H]              every VM with its latest sample
    presculpt metrics VM [--since 1h]     a VM's history (raw samples, or roll-ups with --rollup)
    presculpt resize VM --vcpus N ...     routed to the VM's agent; prints the agent's outcome
    presculpt events                      follow the live stream of events (forecast anomalies too)
    presculpt plan [--host H]             what the planner would do now (a dry run), with each reason
    presculpt forecast show VM            a VM's forecast band next to what happened (forecast_cli wires these)
    presculpt forecast accuracy           online forecast accuracy, overall and per VM, worst first
    presculpt forecast aggregate          forecasts of each customer's and segment's summed demand

``--coordinator ADDR`` (default: $PRESCULPT_COORDINATOR, else 127.0.0.1:7600); ``--json`` for scripts.
Over mutual TLS with a client certificate (see :func:`client_tls`), or ``--insecure`` for plain text.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from presculpt import tls
from presculpt.clitools import positive_float, positive_int, print_json, print_table
from presculpt.errors import UserError
from presculpt.v1 import api_pb2, api_pb2_grpc, model_pb2

DEFAULT_COORDINATOR = "127.0.0.1:7600"
ENV_COORDINATOR = "PRESCULPT_COORDINATOR"
ENV_TLS = {"ca": "PRESCULPT_CA", "cert": "PRESCULPT_CERT", "key": "PRESCULPT_KEY"}
ENV_INSECURE = "PRESCULPT_INSECURE"
ENV_PKI = "PRESCULPT_PKI"
OPERATOR_CERT = "operator"  # the client certificate looked for in the PKI directory
RPC_TIMEOUT_S = 15.0
GRPC_UNKNOWN_METHOD = "Method not found!"  # grpc's details for an RPC the server does not have
FORECAST_METRICS = ("cpu_cores", "memory_mib")
DEFAULT_ACCURACY_ROWS = 20
SAMPLE_FIELDS = ("cpu_cores", "vcpus", "cpu_quota_cores", "memory_mib", "memory_used_mib",
                 "memory_available_mib", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class CoordinatorError(UserError):
    """The coordinator answered with an error status, or could not be reached."""


def duration(text: str) -> float:
    """'90s', '15m', '1h', '2d' or plain seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 15m, 1h or 2d, got {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def client_tls(args: argparse.Namespace) -> tls.TlsMaterial | None:
    """The operator's TLS material: --ca/--cert/--key, else $PRESCULPT_CA/_CERT/_KEY, else ca.crt and
    operator.crt/.key in $PRESCULPT_PKI or /etc/presculpt/pki; None with --insecure (or
    $PRESCULPT_INSECURE=1), for a coordinator that runs in plain text."""
    given = {k: getattr(args, k, None) or os.environ.get(env) for k, env in ENV_TLS.items()}
    insecure = getattr(args, "insecure", False) or os.environ.get(ENV_INSECURE, "") in ("1", "true", "yes")
    if insecure:
        if any(given.values()):
            raise UserError("--insecure (or $PRESCULPT_INSECURE) turns TLS off: drop --ca/--cert/--key or it")
        return None
    pki = Path(os.environ.get(ENV_PKI) or tls.DEFAULT_PKI_DIR)
    defaults = {"ca": pki / "ca.crt", "cert": pki / f"{OPERATOR_CERT}.crt", "key": pki / f"{OPERATOR_CERT}.key"}
    paths = {k: v or (str(defaults[k]) if defaults[k].exists() else "") for k, v in given.items()}
    if not paths["ca"] or not paths["cert"] or not paths["key"]:
        raise UserError(f"no TLS certificate to show the coordinator: give --ca, --cert and --key (or "
                        f"$PRESCULPT_CA, $PRESCULPT_CERT and $PRESCULPT_KEY, or make {defaults['cert']} with "
                        f"`presculpt certs issue {OPERATOR_CERT} --client`), or --insecure for a coordinator "
                        "that runs in plain text")
    try:
        return tls.load_material(tls.TlsConfig(**paths), "presculpt")
    except ValueError as err:
        raise UserError(str(err)) from None


@contextmanager
def _client(args: argparse.Namespace) -> Iterator[api_pb2_grpc.CoordinatorServiceStub]:
    address = args.coordinator or os.environ.get(ENV_COORDINATOR) or DEFAULT_COORDINATOR
    material = client_tls(args)
    channel = tls.channel(address, material)
    try:
        yield api_pb2_grpc.CoordinatorServiceStub(channel)
    except grpc.RpcError as err:
        code, details = err.code(), err.details()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.UNAVAILABLE:
            # A refused TLS handshake reads "Socket closed" here: say why when our certificate explains it.
            refused = material is not None and tls.handshake_ended(details or "")
            problem = tls.certificate_problem(material) if refused else None
            if problem:
                raise CoordinatorError(f"the coordinator at {address} refused the TLS handshake: {problem}") from None
            raise CoordinatorError(f"cannot reach the coordinator at {address} ({details})") from None
        if code == grpc.StatusCode.UNIMPLEMENTED and details == GRPC_UNKNOWN_METHOD:
            raise CoordinatorError(f"the coordinator at {address} does not offer this request "
                                   "(it runs an older version)") from None
        raise CoordinatorError(f"{code.name}: {details}") from None
    finally:
        channel.close()


def _optional(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def sample_row(s: model_pb2.VmSample) -> dict[str, Any]:
    row: dict[str, Any] = {"ts": s.ts}
    for name in SAMPLE_FIELDS:
        row[name] = _optional(s, name) if name in ("cpu_quota_cores", "memory_used_mib",
                                                   "memory_available_mib") else getattr(s, name)
    return row


def vm_row(vm: api_pb2.Vm) -> dict[str, Any]:
    info = vm.info
    row: dict[str, Any] = {
        "name": info.name, "host": vm.host, "uuid": info.uuid, "state": info.state,
        "vcpus": info.vcpus, "max_vcpus": info.max_vcpus, "cpu_quota_cores": _optional(info, "cpu_quota_cores"),
        "memory_mib": info.memory_mib, "max_memory_mib": info.max_memory_mib,
        "latest": sample_row(vm.latest) if vm.HasField("latest") else None,
    }
    latest = row["latest"] or {}
    row["cpu_cores"] = latest.get("cpu_cores")
    row["memory_used_mib"] = latest.get("memory_used_mib")
    row["sampled_at"] = latest.get("ts")
    return row


def _level(q: float) -> str:
    """A quantile level's name: 0.9 -> p90, 0.1 -> p10."""
    return f"p{round(q * 100):02d}"


def _short(value: float) -> str:
    """A value inside a sentence: three significant digits, whole numbers from 1000 (MiB)."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _span(seconds: float) -> str:
    """A window's length: 90m, 6h, 2d."""
    if seconds >= 2 * 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds / 60:g}m"


def _ago(ts: float) -> str:
    if not ts:
        return "-"
    seconds = max(0.0, time.time() - ts)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    return f"{seconds / 60:.0f}m ago" if seconds < 7200 else f"{seconds / 3600:.0f}h ago"


def libvirt_driver(uri: str) -> str:
    """The libvirt driver a URI names: qemu:///system and qemu+ssh://h/system -> qemu, test:///default -> test."""
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    return scheme.split("+", 1)[0].lower()


def driver_label(driver: str) -> str:
    """How `presculpt hosts` shows a host's driver: the test driver is flagged as having no real guests."""
    if driver == "test":
        return "test (no real guests)"
    return driver or "-"


def cmd_hosts(args: argparse.Namespace) -> int:
    with _client(args) as api:
        hosts = api.ListHosts(api_pb2.ListHostsRequest(), timeout=RPC_TIMEOUT_S).hosts
    rows = []
    for h in hosts:
        latest = h.latest if h.HasField("latest") else None
        rows.append({
            "id": h.id, "hostname": h.info.hostname, "uri": h.info.uri, "driver": libvirt_driver(h.info.uri),
            "hypervisor": h.info.hypervisor, "connected": h.connected,
            "cpus": h.info.cpus, "memory_mib": h.info.memory_mib, "vm_count": h.vm_count,
            "cpu_used_cores": latest.cpu_used_cores if latest else None,
            "memory_used_mib": latest.memory_used_mib if latest else None,
            "last_seen": h.last_seen, "pending_commands": h.pending_commands,
        })
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        row["connected"] = "yes" if row["connected"] else "no"
        row["last_seen"] = _ago(row["last_seen"])
        row["driver"] = driver_label(row["driver"])
    print_table(rows, [("id", "HOST"), ("connected", "CONNECTED"), ("driver", "DRIVER"), ("cpus", "CPUS"),
                       ("memory_mib", "MEM MIB"), ("vm_count", "VMS"), ("cpu_used_cores", "CPU USED"),
                       ("memory_used_mib", "MEM USED MIB"), ("pending_commands", "PENDING"),
                       ("last_seen", "LAST SEEN")])
    return 0


def cmd_vms(args: argparse.Namespace) -> int:
    with _client(args) as api:
        vms = api.ListVms(api_pb2.ListVmsRequest(host=args.host or ""), timeout=RPC_TIMEOUT_S).vms
    rows = [vm_row(vm) for vm in vms]
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        row["sampled_at"] = _ago(row["sampled_at"] or 0)
    print_table(rows, [("name", "NAME"), ("host", "HOST"), ("state", "STATE"), ("vcpus", "VCPUS"),
                       ("max_vcpus", "MAX"), ("cpu_quota_cores", "CPU CAP"), ("cpu_cores", "CPU USED"),
                       ("memory_mib", "MEM MIB"), ("max_memory_mib", "MAX MIB"),
                       ("memory_used_mib", "USED MIB"), ("sampled_at", "SAMPLED")])
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    now = time.time()
    request = api_pb2.GetVmHistoryRequest(
        vm=args.vm, host=args.host or "", start=now - args.since, end=now - args.until if args.until else 0,
        resolution=api_pb2.RESOLUTION_ROLLUP if args.rollup else api_pb2.RESOLUTION_RAW if args.raw
        else api_pb2.RESOLUTION_AUTO, limit=args.limit or 0)
    with _client(args) as api:
        history = api.GetVmHistory(request, timeout=RPC_TIMEOUT_S)
    if history.rollups:
        rows = []
        for r in history.rollups:
            row: dict[str, Any] = {"ts": r.start, "duration_s": r.duration_s, "count": r.count}
            for name in ("cpu_cores", "memory_mib", "memory_used_mib", "disk_read_bps", "disk_write_bps",
                         "net_rx_bps", "net_tx_bps"):
                stat = getattr(r, name)
                row.update({f"{name}_min": stat.min, f"{name}_mean": stat.mean, f"{name}_max": stat.max})
            rows.append(row)
        columns = [("time", "TIME"), ("count", "N"), ("cpu_cores_mean", "CPU MEAN"), ("cpu_cores_max", "CPU MAX"),
                   ("memory_mib_mean", "MEM MIB"), ("memory_used_mib_mean", "USED MEAN"),
                   ("memory_used_mib_max", "USED MAX")]
    else:
        rows = [sample_row(s) for s in history.samples]
        columns = [("time", "TIME"), ("cpu_cores", "CPU CORES"), ("vcpus", "VCPUS"), ("memory_mib", "MEM MIB"),
                   ("memory_used_mib", "USED MIB"), ("disk_read_bps", "DISK R B/S"),
                   ("disk_write_bps", "DISK W B/S"), ("net_rx_bps", "NET RX B/S"), ("net_tx_bps", "NET TX B/S")]
    if args.json:
        print_json(rows)
        return 0
    print(f"{history.vm.name} on {history.host}: {len(rows)} {'roll-ups' if history.rollups else 'samples'}")
    for row in rows:
        row["time"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["ts"]))
    print_table(rows, columns)
    return 0


def cmd_resize(args: argparse.Namespace) -> int:
    target = model_pb2.Shape()
    if args.vcpus is not None:
        target.vcpus = args.vcpus
    if args.cpu_cores is not None:
        target.cpu_cores = args.cpu_cores
    if args.memory_mib is not None:
        target.memory_mib = args.memory_mib
    if not target.ListFields():
        raise UserError("nothing to change: give --vcpus, --cpu-cores or --memory-mib")
    request = api_pb2.ResizeVmRequest(vm=args.vm, host=args.host or "", target=target, timeout_s=args.timeout,
                                      reason=args.reason or "presculpt resize")
    with _client(args) as api:
        response = api.ResizeVm(request, timeout=args.timeout + RPC_TIMEOUT_S)
    outcome = response.outcome
    vm = outcome.vm
    result = {
        "vm": vm.name or args.vm, "host": response.host, "command_id": response.command_id,
        "status": model_pb2.CommandOutcome.Status.Name(outcome.status), "message": outcome.message,
        "steps": list(outcome.steps),
        "state": {"vcpus": vm.vcpus, "cpu_quota_cores": _optional(vm, "cpu_quota_cores"),
                  "memory_mib": vm.memory_mib, "max_vcpus": vm.max_vcpus, "max_memory_mib": vm.max_memory_mib},
    }
    if args.json:
        print_json(result)
        return 0
    print(f"{result['vm']} on {result['host']}: "
          + ("; ".join(result["steps"]) if result["steps"] else outcome.message or result["status"].lower()))
    print_table([{**result["state"], "name": result["vm"]}],
                [("name", "NAME"), ("vcpus", "VCPUS"), ("cpu_quota_cores", "CPU CAP"),
                 ("memory_mib", "MEM MIB"), ("max_vcpus", "MAX"), ("max_memory_mib", "MAX MIB")])
    return 0


def event_dict(event: api_pb2.Event) -> dict[str, Any]:
    kind = event.WhichOneof("kind") or "unknown"
    body = MessageToDict(getattr(event, kind), preserving_proto_field_name=True) if kind != "unknown" else {}
    return {"ts": event.ts, "host": event.host, "kind": kind, kind: body}


def event_line(event: api_pb2.Event) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(event.ts))
    kind = event.WhichOneof("kind")
    if kind == "metrics":
        m = event.metrics
        text = f"batch {m.seq}: {len(m.vms)} VM samples"
    elif kind == "command":
        c = event.command
        action = c.WhichOneof("action")
        body = getattr(c, action)
        target = MessageToDict(body.target) if hasattr(body, "target") else {}
        text = f"command {c.id} {action} {getattr(body, 'vm', '') or getattr(body, 'pool', '')} {target}"
    elif kind == "outcome":
        o = event.outcome
        text = f"outcome {o.command_id}: {model_pb2.CommandOutcome.Status.Name(o.status)} {o.message}"
    elif kind == "agent":
        text = ("agent connected: " if event.agent.connected else "agent disconnected: ") + event.agent.message
    elif kind == "unmet":
        u = event.unmet
        text = f"unmet demand: {u.vm}: {u.reason}"
    elif kind == "anomaly":
        a = event.anomaly
        steps = len(a.actual)
        last = f"last {_short(a.actual[-1])} vs bound {_short(a.bound[-1])}, " if a.actual and a.bound else ""
        text = (f"anomaly: {a.vm} {a.metric} {a.direction} {_level(a.quantile)} for {steps} "
                f"step{'' if steps == 1 else 's'} ({last}model {a.model})")
    else:
        text = "unknown event"
    return f"{when} {event.host} {text}".rstrip()


def cmd_events(args: argparse.Namespace) -> int:
    with _client(args) as api:
        seen = 0
        for event in api.WatchEvents(api_pb2.WatchEventsRequest(host=args.host or "")):
            if args.json:
                print(json.dumps(event_dict(event)))
            else:
                print(event_line(event))
            sys.stdout.flush()
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0


def shape_dict(shape: model_pb2.Shape) -> dict[str, Any]:
    return {"vcpus": shape.vcpus, "cpu_cores": shape.cpu_cores, "memory_mib": shape.memory_mib}


def plan_dict(response: api_pb2.GetPlanResponse) -> dict[str, Any]:
    """A plan as plain data (``presculpt plan --json``)."""
    return {
        "mode": response.mode, "planned_at": response.planned_at, "step": response.step, "step_s": response.step_s,
        "vms": response.vms, "forecast_vms": response.forecast_vms, "cost_per_hour": response.cost_per_hour,
        "customer_cost_per_hour": dict(sorted(response.customer_cost_per_hour.items())),
        "actions": [{"vm": a.vm, "uuid": a.uuid, "host": a.host, "kind": a.kind, "command": a.command or None,
                     "previous": shape_dict(a.previous), "target": shape_dict(a.target), "reason": a.reason,
                     "confidence": a.confidence, "cost_per_hour": a.cost_per_hour,
                     "expected_benefit": a.expected_benefit, "vetoed": a.vetoed} for a in response.actions],
        "unmet": [{"host": u.host, "vm": u.vm, "uuid": u.uuid, "cpu_cores": u.cpu_cores, "memory_mib": u.memory_mib,
                   "reason": u.reason} for u in response.unmet],
    }


def _shape_text(shape: dict[str, Any]) -> str:
    return f"{shape['vcpus']}v {shape['cpu_cores']:.3g}c {shape['memory_mib']}M"


def cmd_plan(args: argparse.Namespace) -> int:
    with _client(args) as api:
        response = api.GetPlan(api_pb2.GetPlanRequest(host=args.host or ""), timeout=RPC_TIMEOUT_S)
    plan = plan_dict(response)
    if args.json:
        print_json(plan)
        return 0
    when = time.strftime("%H:%M:%S", time.localtime(plan["planned_at"]))
    sends = "the scheduled planner sends its actions" if plan["mode"] == "enforce" else "nothing is sent"
    where = f" ({args.host}'s shown)" if args.host else ""
    vetoed = sum(1 for a in plan["actions"] if a["vetoed"])
    print(f"plan at {when} (dry run; mode {plan['mode']}: {sends}): {plan['vms']} VMs, {plan['forecast_vms']} with "
          f"forecasts{where}; {len(plan['actions']) - vetoed} action(s), {vetoed} vetoed; "
          f"{plan['cost_per_hour']:.4f} per hour after the plan")
    if plan["actions"]:
        rows = [{"vm": a["vm"], "host": a["host"], "kind": a["kind"] + (" (vetoed)" if a["vetoed"] else ""),
                 "from": _shape_text(a["previous"]), "to": _shape_text(a["target"]),
                 "confidence": a["confidence"], "cost": f"{a['cost_per_hour']:+.4f}", "reason": a["reason"]}
                for a in plan["actions"]]
        print_table(rows, [("vm", "VM"), ("host", "HOST"), ("kind", "ACTION"), ("from", "FROM"), ("to", "TO"),
                           ("confidence", "P(SHORT)"), ("cost", "COST/H"), ("reason", "REASON")])
    else:
        print("no action: every VM's allocation fits its forecast")
    for u in plan["unmet"]:
        print(f"unmet demand: {u['vm']} on {u['host']}: {u['reason']}")
    return 0


def client_flags() -> argparse.ArgumentParser:
    """The flags every command talking to the coordinator takes (an argparse parent)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--coordinator", metavar="ADDR",
                        help=f"coordinator HOST:PORT (default: ${ENV_COORDINATOR}, else {DEFAULT_COORDINATOR})")
    common.add_argument("--json", action="store_true", help="print JSON on stdout")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    common.add_argument("--ca", metavar="FILE", help="CA the coordinator's certificate must be signed by "
                        f"(default: ${ENV_TLS['ca']}, else ca.crt in ${ENV_PKI} or {tls.DEFAULT_PKI_DIR})")
    common.add_argument("--cert", metavar="FILE", help=f"your client certificate (default: ${ENV_TLS['cert']}, "
                        f"else {OPERATOR_CERT}.crt there: presculpt certs issue {OPERATOR_CERT} --client)")
    common.add_argument("--key", metavar="FILE", help=f"its private key (default: ${ENV_TLS['key']}, "
                        f"else {OPERATOR_CERT}.key there)")
    common.add_argument("--insecure", action="store_true",
                        help=f"plain text, for a coordinator running with --insecure (or ${ENV_INSECURE}=1)")
    return common


def cmd_forecast_show(args: argparse.Namespace) -> int:
    request = api_pb2.GetForecastRequest(vm=args.vm, host=args.host or "", since_s=args.since,
                                         lead_steps=args.lead)
    with _client(args) as api:
        view = api.GetForecast(request, timeout=RPC_TIMEOUT_S)
    levels = list(view.quantiles)
    names = [_level(q) for q in levels]

    def band(values) -> dict[str, float]:
        return dict(zip(names, values))

    past = [{"ts": p.ts, "metric": p.metric, **band(p.values),
             "actual": p.actual if p.HasField("actual") else None} for p in view.past]
    latest = [{"ts": ts, "metric": m.metric, **band(step.values)}
              for m in view.latest for ts, step in zip(m.ts, m.steps)]
    accuracy = MessageToDict(view.accuracy, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    if args.json:
        print_json({"vm": view.vm.name, "host": view.host, "model": view.model, "cold_start": view.cold_start,
                    "origin_ts": view.origin_ts, "step_s": view.step_s, "quantiles": levels,
                    "lead_steps": args.lead, "past": past, "latest": latest, "accuracy": accuracy})
        return 0
    model = view.model + (" (cold start: too little history for the model)" if view.cold_start else "")
    print(f"{view.vm.name} on {view.host}: forecast by {model}")
    columns = [("time", "TIME"), *[(n, n.upper()) for n in names]]
    for metric in ("cpu_cores", "memory_mib"):
        rows = [r for r in past if r["metric"] == metric]
        if rows:
            print(f"\n{metric}: forecast {args.lead} step(s) ahead, next to what happened")
            for r in rows:
                r["time"] = time.strftime("%H:%M", time.localtime(r["ts"]))
                inside = r["actual"] is not None and r["actual"] <= r.get("p90", float("inf"))
                r["seen"] = "-" if r["actual"] is None else ("ok" if inside else "ABOVE p90")
            print_table(rows, [*columns, ("actual", "ACTUAL"), ("seen", "")])
        ahead = [r for r in latest if r["metric"] == metric]
        if ahead:
            print(f"\n{metric}: the latest forecast")
            for r in ahead:
                r["time"] = time.strftime("%H:%M", time.localtime(r["ts"]))
            print_table(ahead, columns)
    a = view.accuracy
    if a.count:
        print(f"\nCPU accuracy over the window: pinball {a.pinball:.4f} cores, coverage p90 "
              f"{a.coverage_p90:.2f}, p99 {a.coverage_p99:.2f} ({a.count} steps)")
    return 0


def add_forecast_show(forecast_sub: argparse._SubParsersAction) -> None:
    """``presculpt forecast show VM`` (``presculpt forecast VM`` is the same)."""
    p = forecast_sub.add_parser("show", parents=[client_flags()],
                                help="a VM's quantile forecast next to what actually happened")
    p.add_argument("vm", help="VM name (or uuid)")
    p.add_argument("--host", help="the VM's host, when its name exists on several hosts")
    p.add_argument("--since", type=duration, default=6 * 3600.0, help="past forecasts to show (default 6h)")
    p.add_argument("--lead", type=positive_int, default=1,
                   help="show past forecasts made this many steps ahead of their target (default 1)")
    p.set_defaults(func=cmd_forecast_show)


def accuracy_dict(a: api_pb2.ForecastAccuracy) -> dict[str, Any]:
    """Pinball loss and coverage; null while no step was scored (0 would read as perfect)."""
    scored = a.count > 0
    return {"pinball": a.pinball if scored else None, "coverage_p90": a.coverage_p90 if scored else None,
            "coverage_p99": a.coverage_p99 if scored else None, "count": a.count}


def accuracy_rows(response: api_pb2.GetForecastAccuracyResponse) -> list[dict[str, Any]]:
    """One row per VM with each metric's accuracy, the highest CPU pinball loss first (then memory's)."""
    by_vm: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in response.vms:
        row = by_vm.setdefault((entry.host, entry.vm), {"host": entry.host, "vm": entry.vm,
                                                        **{m: None for m in FORECAST_METRICS}})
        row[entry.metric] = accuracy_dict(entry.accuracy)

    def loss(acc: dict[str, Any] | None) -> float:
        return -1.0 if acc is None or acc["pinball"] is None else acc["pinball"]

    rows = [by_vm[key] for key in sorted(by_vm)]
    rows.sort(key=lambda r: (loss(r["cpu_cores"]), loss(r["memory_mib"])), reverse=True)  # stable: ties by name
    return rows


def _accuracy_sentence(acc: dict[str, Any], unit: str) -> str:
    if not acc["count"]:
        return "no steps scored"
    return (f"pinball {acc['pinball']:.4g} {unit}, coverage p90 {acc['coverage_p90']:.2f}, "
            f"p99 {acc['coverage_p99']:.2f} ({acc['count']:,} steps)")


def cmd_forecast_accuracy(args: argparse.Namespace) -> int:
    with _client(args) as api:
        response = api.GetForecastAccuracy(api_pb2.GetForecastAccuracyRequest(host=args.host or ""),
                                           timeout=RPC_TIMEOUT_S)
    rows = accuracy_rows(response)
    overall = {"cpu_cores": accuracy_dict(response.overall_cpu), "memory_mib": accuracy_dict(response.overall_memory)}
    if args.json:
        print_json({"model": response.model, "host": args.host or None, "scored_at": response.scored_at,
                    "window_s": response.window_s, "overall": overall,
                    "vms": rows[:args.top] if args.top else rows})
        return 0
    where = f"host {args.host}" if args.host else "all hosts"
    scored = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(response.scored_at))
    print(f"forecast accuracy on {where}, model {response.model}: forecasts made in the {_span(response.window_s)} "
          f"before {scored}, scored against what happened")
    print(f"  CPU:    {_accuracy_sentence(overall['cpu_cores'], 'cores')}")
    print(f"  memory: {_accuracy_sentence(overall['memory_mib'], 'MiB')}")
    print("  (pinball: mean loss over the quantiles, lower is better; coverage: share of actual values at or "
          "below the p90 and p99 forecasts, ideally 0.90 and 0.99)")
    if not rows:
        print("\nno VM has scored forecasts in the window yet")
        return 0
    top = args.top or DEFAULT_ACCURACY_ROWS
    shown = rows[:top]
    print("\n" + (f"the {len(shown)} VM{'' if len(shown) == 1 else 's'} of {len(rows)} with the highest CPU "
                  "pinball loss:" if len(rows) > top else "every VM, the highest CPU pinball loss first:"))
    table = []
    for row in shown:
        line = {"host": row["host"], "vm": row["vm"]}
        for metric, prefix, digits in (("cpu_cores", "cpu", 4), ("memory_mib", "mem", 1)):
            acc = row[metric]
            if acc and acc["count"]:
                line.update({f"{prefix}_pinball": f"{acc['pinball']:.{digits}f}",
                             f"{prefix}_p90": f"{acc['coverage_p90']:.2f}",
                             f"{prefix}_p99": f"{acc['coverage_p99']:.2f}"})
        line["steps"] = max((row[m]["count"] for m in FORECAST_METRICS if row[m]), default=0)
        table.append(line)
    print_table(table, [("host", "HOST"), ("vm", "VM"), ("cpu_pinball", "CPU PINBALL"), ("cpu_p90", "CPU P90"),
                        ("cpu_p99", "CPU P99"), ("mem_pinball", "MEM PINBALL MIB"), ("mem_p90", "MEM P90"),
                        ("mem_p99", "MEM P99"), ("steps", "STEPS")])
    return 0


def aggregate_summary(a: api_pb2.AggregateForecast) -> dict[str, Any]:
    """An aggregate's details with its first forecast step per metric (``first_step``)."""
    names = [_level(q) for q in a.quantiles]
    return {
        "kind": a.kind, "name": a.name, "vms": a.vms, "model": a.model, "cold_start": a.cold_start,
        "origin_ts": a.origin_ts, "step_s": a.step_s, "quantiles": list(a.quantiles),
        "cpu_capacity_cores": a.cpu_capacity_cores or None, "memory_capacity_mib": a.memory_capacity_mib or None,
        "first_step": {f.metric: {"ts": f.ts[0], **dict(zip(names, f.steps[0].values))}
                       for f in a.forecasts if f.steps},
    }


def cmd_forecast_aggregate(args: argparse.Namespace) -> int:
    kind, name = ("customer", args.customer) if args.customer is not None else ("segment", args.segment)
    with _client(args) as api:
        if name is None:
            listed = api.ListAggregateForecasts(api_pb2.ListAggregateForecastsRequest(),
                                                timeout=RPC_TIMEOUT_S).aggregates
        else:
            one = api.GetAggregateForecast(api_pb2.GetAggregateForecastRequest(kind=kind, name=name),
                                           timeout=RPC_TIMEOUT_S)
    if name is None:
        return _print_aggregates([aggregate_summary(a) for a in listed], args.json)
    return _print_aggregate(one, args.json)


def _print_aggregates(summaries: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print_json(summaries)
        return 0
    if not summaries:
        print("no aggregate forecasts: no VM with recent data has 'customer' or 'segment' in its metadata")
        return 0
    first = summaries[0]
    start = time.strftime("%H:%M", time.localtime(first["origin_ts"]))
    print(f"the summed demand of each customer and segment, forecast for the {first['step_s'] / 60:g} min "
          f"from {start}")
    rows = []
    for s in summaries:
        row = {"kind": s["kind"], "name": s["name"], "vms": s["vms"], "model": s["model"]}
        for metric, prefix in (("cpu_cores", "cpu"), ("memory_mib", "mem")):
            step = s["first_step"].get(metric, {})
            row.update({f"{prefix}_p50": step.get("p50"), f"{prefix}_p90": step.get("p90")})
        rows.append(row)
    print_table(rows, [("kind", "KIND"), ("name", "NAME"), ("vms", "VMS"), ("model", "MODEL"),
                       ("cpu_p50", "CPU P50"), ("cpu_p90", "CPU P90"), ("mem_p50", "MEM P50 MIB"),
                       ("mem_p90", "MEM P90 MIB")])
    return 0


def _print_aggregate(a: api_pb2.AggregateForecast, as_json: bool) -> int:
    names = [_level(q) for q in a.quantiles]
    latest = [{"ts": ts, "metric": f.metric, **dict(zip(names, step.values))}
              for f in a.forecasts for ts, step in zip(f.ts, f.steps)]
    if as_json:
        summary = aggregate_summary(a)
        del summary["first_step"]
        print_json({**summary, "latest": latest})
        return 0
    size = [f"{a.cpu_capacity_cores:g} vCPUs" if a.cpu_capacity_cores else "",
            f"{a.memory_capacity_mib:g} MiB" if a.memory_capacity_mib else ""]
    capacity = f" ({' and '.join(filter(None, size))} at most)" if any(size) else ""
    model = a.model + (" (cold start)" if a.cold_start and "cold" not in a.model else "")
    print(f"{a.kind} {a.name}: {a.vms} VM{'' if a.vms == 1 else 's'}{capacity}, forecast by {model}")
    columns = [("time", "TIME"), *[(n, n.upper()) for n in names]]
    for metric in FORECAST_METRICS:
        rows = [r for r in latest if r["metric"] == metric]
        if rows:
            print(f"\n{metric}: the forecast of the summed demand")
            for r in rows:
                r["time"] = time.strftime("%H:%M", time.localtime(r["ts"]))
            print_table(rows, columns)
    return 0


def add_forecast_accuracy(forecast_sub: argparse._SubParsersAction) -> None:
    """``presculpt forecast accuracy [--host H] [--top N]``."""
    p = forecast_sub.add_parser(
        "accuracy", parents=[client_flags()], help="online forecast accuracy, overall and per VM (worst first)",
        description="How well the served forecasts matched what happened, as the coordinator's forecast job "
                    "last scored them: the mean pinball loss over the quantiles (lower is better) and the "
                    "coverage of p90 and p99 (the share of actual values at or below them), for CPU and "
                    "memory overall, then per VM with the highest CPU pinball loss first.")
    p.add_argument("--host", help="only this host's VMs")
    p.add_argument("--top", type=positive_int, metavar="N",
                   help=f"VMs listed (default {DEFAULT_ACCURACY_ROWS}; with --json, every VM)")
    p.set_defaults(func=cmd_forecast_accuracy)


def add_forecast_aggregate(forecast_sub: argparse._SubParsersAction) -> None:
    """``presculpt forecast aggregate [--customer NAME | --segment NAME]``."""
    p = forecast_sub.add_parser(
        "aggregate", parents=[client_flags()], help="forecasts of each customer's and segment's summed demand",
        description="VMs are grouped by the 'customer' and 'segment' keys of their metadata; the coordinator "
                    "forecasts each group's summed CPU and memory. Without a name: every group with its "
                    "members, model and the p50 and p90 of its next step. With a name: that group's quantile "
                    "band for every step ahead.")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--customer", metavar="NAME", help="one customer's forecast")
    which.add_argument("--segment", metavar="NAME", help="one segment's forecast")
    p.set_defaults(func=cmd_forecast_aggregate)

def add_operator_commands(sub: argparse._SubParsersAction) -> None:
    """Add hosts, vms, metrics, resize, plan and events to the ``presculpt`` command line."""
    common = client_flags()

    p = sub.add_parser("hosts", parents=[common], help="the hosts known to the coordinator")
    p.set_defaults(func=cmd_hosts)

    p = sub.add_parser("vms", parents=[common], help="every VM with its latest metrics")
    p.add_argument("--host", help="only this host's VMs")
    p.set_defaults(func=cmd_vms)

    p = sub.add_parser("metrics", parents=[common], help="a VM's metric history")
    p.add_argument("vm", help="VM name (or uuid)")
    p.add_argument("--host", help="the VM's host, when its name exists on several hosts")
    p.add_argument("--since", type=duration, default=3600.0, help="how far back (90s, 15m, 1h, 2d; default 1h)")
    p.add_argument("--until", type=duration, help="end this long ago (default: now)")
    res = p.add_mutually_exclusive_group()
    res.add_argument("--raw", action="store_true", help="raw samples (default while within raw retention)")
    res.add_argument("--rollup", action="store_true", help="min/mean/max roll-ups")
    p.add_argument("--limit", type=positive_int, help="at most this many samples")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("resize", parents=[common], help="resize a VM through its agent (guarded)")
    p.add_argument("vm", help="VM name (or uuid)")
    p.add_argument("--host", help="the VM's host, when its name exists on several hosts")
    p.add_argument("--vcpus", type=positive_int, help="vCPUs online")
    p.add_argument("--cpu-cores", type=positive_float, help="total CPU cap in cores (1.5 = 2 vCPUs capped at 1.5)")
    p.add_argument("--memory-mib", type=positive_int, help="memory (balloon target) in MiB")
    p.add_argument("--timeout", type=positive_float, default=30.0,
                   help="seconds to wait for the agent's outcome (default 30); the command expires after")
    p.add_argument("--reason", help="recorded with the command")
    p.set_defaults(func=cmd_resize)

    p = sub.add_parser("plan", parents=[common], help="what the planner would do now (a dry run)",
                       description="Runs the coordinator's planner now on the newest forecasts without sending "
                                   "anything, whatever its mode: one row per action (pre-sculpt, downgrade, "
                                   "reclaim, throttle, swap) with the VM's shape before and after, the forecast "
                                   "probability that demand exceeds its allocation, the change of its cost per "
                                   "hour and the reason; then the demand no host can meet. Shapes read "
                                   "vCPUs, CPU cores and memory MiB.")
    p.add_argument("--host", help="only this host's VMs")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("events", parents=[common], help="follow the live stream of events")
    p.add_argument("--host", help="only this host's events")
    p.add_argument("--count", type=positive_int, help="stop after this many events")
    p.set_defaults(func=cmd_events)
