"""The systemd units as operators install them: `systemd-analyze verify` accepts them, their
security exposure stays low, their paths agree with the daemons' defaults and the sample configs,
and `scripts/install-units.sh` installs what the README says.

systemd does not run as PID 1 here, and /opt/presculpt (where operators install the package) does
not exist, so `verify` runs against a scratch root: the units byte for byte in its
/etc/systemd/system, this system's own units next to them, and executables standing in for the
package's console scripts at /opt/presculpt/bin (verify checks that ExecStart= is executable)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from presculpt.agent.config import AgentConfig
from presculpt.coordinator.config import CoordinatorConfig

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
ROLES = ("agent", "coordinator")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason="systemd-analyze is missing (scripts/install.sh installs systemd)")
# Overall exposure of `systemd-analyze security` (0 safest, 10 worst); the notes in the units say
# what each daemon needs that keeps it above zero.
MAX_EXPOSURE = {"coordinator": 1.1, "agent": 1.1}


def unit_entries(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, every value of a repeated key in order."""
    entries: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def scratch_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    system_units = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir())
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for role in ROLES:
        unit = UNITS / f"presculpt-{role}.service"
        shutil.copyfile(unit, root / "etc/systemd/system" / unit.name)
        binary = root / unit_entries(unit)["ExecStart"][0].split()[0].lstrip("/")
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess:
    return subprocess.run([SYSTEMD_ANALYZE, "verify", f"--root={root}", *units],
                          capture_output=True, text=True, timeout=60)


@needs_analyze
def test_units_verify(tmp_path):
    result = verify(scratch_root(tmp_path), *(f"presculpt-{role}.service" for role in ROLES))
    # verify exits 0 on unknown keys and bad values, only warning about them: any output fails.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
def test_verify_would_catch_a_mistake(tmp_path):
    root = scratch_root(tmp_path)
    unit = root / "etc/systemd/system/presculpt-agent.service"
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=maybe"))
    result = verify(root, "presculpt-agent.service")
    assert "Failed to parse protect home value" in result.stderr
    (root / "opt/presculpt/bin/presculpt-coordinator").unlink()
    result = verify(root, "presculpt-coordinator.service")
    assert result.returncode != 0 and "is not executable" in result.stderr


@needs_analyze
@pytest.mark.parametrize("role", ROLES)
def test_security_exposure(role):
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager",
                             str(UNITS / f"presculpt-{role}.service")], capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for presculpt-\w+\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE[role], result.stdout


def test_units_agree_with_the_daemons_defaults():
    agent = unit_entries(UNITS / "presculpt-agent.service")
    coordinator = unit_entries(UNITS / "presculpt-coordinator.service")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for role, unit in (("agent", agent), ("coordinator", coordinator)):
        command = unit["ExecStart"][0].split()
        assert command[0] == f"/opt/presculpt/bin/presculpt-{role}" and f"presculpt-{role}" in scripts
        assert command[-2:] == ["--config", f"/etc/presculpt/{role}.toml"]
        assert unit["ConfigurationDirectory"] == ["presculpt"]
        assert unit["StateDirectory"] == [f"presculpt/{role}"]
        assert unit["WorkingDirectory"] == [f"/var/lib/presculpt/{role}"]
        assert unit["Type"] == ["notify"] and unit["WatchdogSec"] and unit["Restart"] == ["on-failure"]
        assert unit["CapabilityBoundingSet"] == [""] and unit["ProtectSystem"] == ["strict"]
    # The only places each daemon writes by default are inside its state directory.
    assert Path(AgentConfig().stream.spool_path).parent == Path(agent["WorkingDirectory"][0])
    assert not Path(CoordinatorConfig().db).is_absolute()  # relative to WorkingDirectory
    assert CoordinatorConfig().forecast.model_dir == ""  # next to the db
    # The users the units run as are the ones the sysusers files create.
    assert agent["User"] == ["presculpt-agent"] and agent["SupplementaryGroups"] == ["libvirt"]
    assert coordinator["User"] == ["presculpt"]
    sysusers = (UNITS / "presculpt-agent.sysusers.conf").read_text().split("\n")
    assert any(line.split()[:2] == ["u", "presculpt-agent"] for line in sysusers if line)
    assert any(line.split() == ["m", "presculpt-agent", "libvirt"] for line in sysusers if line)
    sysusers = (UNITS / "presculpt.sysusers.conf").read_text().split("\n")
    assert any(line.split()[:2] == ["u", "presculpt"] for line in sysusers if line)


def test_install_units_keeps_existing_configs(tmp_path):
    env = dict(os.environ, DESTDIR=str(tmp_path))
    script = str(ROOT / "scripts/install-units.sh")
    subprocess.run(["bash", script, "agent"], env=env, check=True, capture_output=True, timeout=60)
    installed = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert installed == ["etc/presculpt/agent.toml", "etc/systemd/system/presculpt-agent.service",
                         "etc/sysusers.d/presculpt-agent.conf"]
    assert (tmp_path / "etc/presculpt/agent.toml").read_text() == (ROOT / "config/agent.sample.toml").read_text()
    (tmp_path / "etc/presculpt/agent.toml").write_text('[stream]\ncoordinator = "coord:7600"\n')
    result = subprocess.run(["bash", script], env=env, check=True, capture_output=True, text=True, timeout=60)
    assert (tmp_path / "etc/presculpt/agent.toml").read_text() == '[stream]\ncoordinator = "coord:7600"\n'
    assert "kept the existing" in result.stderr
    assert (tmp_path / "etc/presculpt/coordinator.toml").is_file()
    assert (tmp_path / "etc/sysusers.d/presculpt.conf").is_file()
    bad = subprocess.run(["bash", script, "controller"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown role 'controller'" in bad.stderr


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """Every key of a config dataclass, dotted (tables of named entries, such as tiers, as one)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += config_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


@pytest.mark.parametrize("role, cls", [("agent", AgentConfig), ("coordinator", CoordinatorConfig)])
def test_sample_config_lists_and_explains_every_key(role, cls):
    """What /etc/presculpt/ROLE.toml starts from names every key, each under a comment."""
    text = (ROOT / "config" / f"{role}.sample.toml").read_text()
    data = tomllib.loads(text)
    comments = " ".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for key in config_keys(cls):
        table = data
        for part in key.split("."):
            assert part in table, f"{role}.sample.toml lacks {key}"
            table = table[part]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\w+) = ", line)
        if not match:
            continue
        above = []
        for prev in reversed(lines[:i]):
            if not prev.strip() or prev.startswith("["):
                break
            above.append(prev)
        explained = any(p.startswith("#") for p in above) or re.search(rf"\b{match.group(1)}\b", comments)
        assert explained, f"{role}.sample.toml: {match.group(1)} has no comment"
