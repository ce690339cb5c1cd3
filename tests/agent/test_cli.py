"""presculpt-agent's command line against libvirt's test driver: output and one-line errors."""

from __future__ import annotations

import json

import pytest

from presculpt.agent import cli


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inventory_json(capsys, testnode_uri):
    code, out, _ = run(capsys, "inventory", "--uri", testnode_uri, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["host"]["cpus"] == 8
    names = {d["name"]: d for d in data["domains"]}
    assert names["guest-a"]["vcpus"] == 1 and names["guest-a"]["max_vcpus"] == 4
    assert names["guest-a"]["memory_mib"] == 1024


def test_inventory_table(capsys, testnode_uri):
    code, out, _ = run(capsys, "inventory", "--uri", testnode_uri)
    assert code == 0
    assert out.splitlines()[1].startswith("NAME")
    assert "guest-b" in out


def test_resize_prints_the_resulting_state(capsys, testnode_uri):
    code, out, _ = run(capsys, "resize", "guest-a", "--uri", testnode_uri, "--vcpus", "3",
                       "--memory-mib", "1536", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["steps"] == ["vcpus 1->3", "memory 1024->1536 MiB"]
    assert data["state"]["vcpus"] == 3 and data["state"]["memory_mib"] == 1536


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resize", "nope", "--vcpus", "2"], "no domain named 'nope'"),
        (["resize", "guest-a", "--vcpus", "5"], "5 vCPUs exceeds the maximum of 4"),
        (["resize", "guest-a", "--memory-mib", "9999"], "exceeds the maximum of 2048 MiB"),
        (["resize", "guest-a"], "nothing to change"),
        (["shadow", "fill", "--count", "1"], "a shadow template is needed"),
        (["shadow", "activate", "--name", "x", "--no-replenish"], "no shadow to activate"),
    ],
)
def test_user_errors_are_one_line(capsys, testnode_uri, argv, message):
    code, out, err = run(capsys, *argv, "--uri", testnode_uri)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and message in err and err.startswith("presculpt-agent: error: ")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resize", "guest-a", "--vcpus", "two"], "expected a whole number"),
        (["resize", "guest-a", "--vcpus", "0"], "above zero"),
        (["resize", "guest-a", "--cpu-cores", "nan"], "above zero"),
        (["resize", "guest-a", "--memory-mib", "-5"], "above zero"),
        (["shadow", "fill", "--state", "frozen"], "invalid choice"),
        (["inventory", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_flags_are_one_line(capsys, testnode_uri, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--uri", testnode_uri])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_unreachable_libvirt(capsys):
    code, _, err = run(capsys, "inventory", "--uri", "qemu+tcp://127.0.0.1:1/system")
    assert code == 1
    assert err.startswith("presculpt-agent: error: cannot connect to qemu+tcp://127.0.0.1:1/system")


def test_bad_config_file(capsys, tmp_path, testnode_uri):
    bad = tmp_path / "agent.toml"
    bad.write_text("[guard]\nmin_vcpus = 'one'\n")
    code, _, err = run(capsys, "inventory", "--uri", testnode_uri, "--config", str(bad))
    assert code == 1 and "min_vcpus: expected a whole number" in err


def test_metrics_json(capsys, testnode_uri):
    code, out, _ = run(capsys, "metrics", "--uri", testnode_uri, "--interval", "0.05", "--json")
    assert code == 0
    data = json.loads(out)
    assert {v["name"] for v in data["vms"]} == {"guest-a", "guest-b"}
    assert data["host"]["cpu_count"] >= 1
