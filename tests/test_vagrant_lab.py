"""Cheap static checks of the Vagrant lab (vagrant/): the lab itself takes minutes and a box build,
so it runs by hand (`make vagrant-lab`), never in the suite."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANT = Path(__file__).resolve().parents[1] / "vagrant"
SCRIPTS = sorted([*VAGRANT.glob("*.sh"), *(VAGRANT / "provision").glob("*.sh")])


def test_the_lab_has_its_vagrantfile_and_scripts():
    names = {p.relative_to(VAGRANT).as_posix() for p in SCRIPTS}
    assert (VAGRANT / "Vagrantfile").is_file()
    assert {"build-box.sh", "wheelhouse.sh", "lab.sh", "provision/lib.sh", "provision/common.sh",
            "provision/coordinator.sh", "provision/host.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(VAGRANT).as_posix())
def test_scripts_parse(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_provisioner_the_vagrantfile_names_exists():
    text = (VAGRANT / "Vagrantfile").read_text()
    assert 'path: "provision/common.sh"' in text
    assert 'path: "provision/#{m[:role]}.sh"' in text
    for role in ("coordinator", "host"):
        assert (VAGRANT / "provision" / f"{role}.sh").is_file()


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed")
def test_vagrantfile_parses():
    done = subprocess.run(["ruby", "-c", str(VAGRANT / "Vagrantfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
