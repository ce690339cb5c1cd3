"""``presculpt forecast``: the VM shorthand, the help, the evaluation's report and JSON, and bad
input refused in one line with exit code 2 before any training."""

from __future__ import annotations

import json

import pytest

from presculpt import cli
from presculpt.forecast_cli import default_to_show, evaluation_report, number
from presculpt.ops import cmd_forecast_show

TINY = ["--train-days", "3", "--validation-days", "1", "--epochs", "1", "--samples-per-epoch", "500",
        "--threads", "1", "--hidden", "8"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, expected", [
    (["forecast", "web-1"], ["forecast", "show", "web-1"]),
    (["forecast", "web-1", "--lead", "3"], ["forecast", "show", "web-1", "--lead", "3"]),
    (["forecast", "--json", "web-1"], ["forecast", "show", "--json", "web-1"]),
    (["forecast", "show", "web-1"], ["forecast", "show", "web-1"]),
    (["forecast", "evaluate", "--trace", "t"], ["forecast", "evaluate", "--trace", "t"]),
    (["forecast", "-h"], ["forecast", "-h"]),
    (["forecast", "--help"], ["forecast", "--help"]),
    (["forecast"], ["forecast"]),
    (["vms", "forecast"], ["vms", "forecast"]),
])
def test_vm_means_show(argv, expected):
    assert default_to_show(argv) == expected


def test_forecast_vm_parses_as_show():
    args = cli.build_parser().parse_args(default_to_show(["forecast", "web-1", "--since", "2h", "--lead", "3"]))
    assert args.func is cmd_forecast_show
    assert (args.vm, args.since, args.lead) == ("web-1", 7200.0, 3)


def test_forecast_vm_reaches_for_the_coordinator(capsys):
    code, out, err = run(capsys, "forecast", "web-1", "--coordinator", "127.0.0.1:1", "--insecure")
    assert code == 1 and out == ""
    assert err.startswith("presculpt: error: cannot reach the coordinator at 127.0.0.1:1")
    assert err.count("\n") == 1


def test_forecast_help_shows_both_forms(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["forecast", "-h"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "presculpt forecast VM" in out and "forecast evaluate --trace DIR" in out
    assert "show" in out and "evaluate" in out


def test_forecast_without_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["forecast"])
    assert exit_info.value.code == 2
    assert "give a VM (presculpt forecast VM) or a subcommand: show, evaluate" in capsys.readouterr().err


def test_evaluate_writes_the_documented_json(capsys, make_trace, tmp_path):
    trace = make_trace("cli-trace", vms=2)
    out_json = tmp_path / "out.json"
    code, out, err = run(capsys, "forecast", "evaluate", "--trace", str(trace), "--json", str(out_json), *TINY)
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert {"models", "train_seconds", "infer_ms_per_1000_series"} <= set(data)
    assert "lstm" in data["models"] and len(data["models"]) >= 2
    for entry in data["models"].values():
        assert {"pinball", "mase", "coverage_p90", "coverage_p99"} <= set(entry)
        assert {"pinball", "mase", "coverage_p90", "coverage_p99"} <= set(entry["memory"])
    # The report on stdout: both metrics, the times and the comparison with the best baseline.
    for text in ("CPU (cores)", "memory (MiB)", "lstm", "seasonal_naive_day", "+5m", "+60m",
                 "ms per 1000 series", "against the best baseline", f"wrote {out_json}"):
        assert text in out, text


@pytest.mark.parametrize("setup, flags, message", [
    ("missing", [], "is not a directory"),
    ("empty", [], "vms.csv does not exist"),
    ("short", [], "no VM has data after its first 3 days"),
    ("tiny", ["--plot", "out.gif"], "must end in .png"),
    ("tiny", ["--json", "/no/such/folder/out.json"], "folder /no/such/folder does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, make_trace, tmp_path, setup, flags, message):
    trace = {"missing": lambda: tmp_path / "nope", "empty": lambda: tmp_path,
             "short": lambda: make_trace("short", days=2), "tiny": lambda: make_trace("tiny", days=2)}[setup]()
    code, out, err = run(capsys, "forecast", "evaluate", "--trace", str(trace), *TINY, *flags)
    assert code == 2
    assert out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("presculpt: error: ") and message in last


def test_evaluate_saves_a_checkpoint_that_loads(capsys, make_trace, tmp_path):
    from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster

    trace = make_trace("save-trace", vms=2, memory=False)
    checkpoint = tmp_path / "model.pt"
    code, out, err = run(capsys, "forecast", "evaluate", "--trace", str(trace), "--save", str(checkpoint), *TINY)
    assert code == 0, err
    assert LstmForecaster.load(checkpoint).horizon == 12
    assert f"saved the trained LSTM to {checkpoint}" in out


def test_report_of_a_cpu_only_result():
    entry = {"pinball": 0.05, "mase": 0.9, "coverage_p90": 0.88, "coverage_p99": 0.985, "forecasts": 1000,
             "pinball_by_horizon": [0.04] * 11 + [0.07]}
    worse = dict(entry, pinball=0.1)
    result = {"trace": "t", "series": 3, "horizon": 12, "quantiles": [0.1, 0.5, 0.9, 0.99], "train_days": 21,
              "train_seconds": 12.3, "infer_ms_per_1000_series": 4.56,
              "models": {"lstm": entry, "seasonal_naive_day": worse, "seasonal_naive_week": worse,
                         "exp_smoothing": dict(entry, pinball=0.08), "recent_percentile": worse}}
    text = evaluation_report(result)
    assert "memory" not in text
    assert "lstm *" in text  # the lowest pinball loss is marked
    assert "37.5% lower than exp_smoothing on CPU" in text
    assert "training: 12.3 s; inference: 4.56 ms per 1000 series" in text


@pytest.mark.parametrize("value, text", [(0.012345, "0.01235"), (1234.5, "1234"), (123456.7, "123457"),
                                         (None, "-"), (float("nan"), "-")])
def test_number(value, text):
    assert number(value) == text
