#!/usr/bin/env bash
# Installs everything Presculpt needs on a Debian 12 machine: Debian packages (libvirt, QEMU and
# what the lab guest is built from), a virtual environment at .venv and the project in it.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  qemu-system-x86 qemu-utils
  busybox-static cpio kmod xz-utils gzip gcc libc6-dev
  libgomp1  # the OpenMP runtime LightGBM's library links (the learned next-step tail)
  systemd  # systemd-analyze: tests/deploy/test_units.py verifies the units in systemd/
  prometheus  # the server tests/integration/test_prometheus.py scrapes both daemons with
)
PYTHON=${PYTHON:-python3}
VENV=.venv

say() { printf 'install: %s\n' "$*" >&2; }

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    SUDO=sudo
  else
    SUDO=
  fi
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x $VENV/bin/python ]]; then
  say "creating the virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV" || { say "python3 -m venv failed: install python3-venv"; exit 1; }
fi

# Reinstall only when the project's metadata changed since the last install.
stamp=$VENV/.presculpt-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  say "installing Python packages into $VENV (torch comes from the local CPU build)"
  # pip's output (build back-end notices included) is shown only when it fails.
  pip_log=$(mktemp)
  "$VENV/bin/python" -m pip install -q --upgrade pip >"$pip_log" 2>&1 || say "could not upgrade pip; going on with $("$VENV/bin/python" -m pip --version | cut -d' ' -f2)"
  if ! "$VENV/bin/python" -m pip install -q -e '.[test]' >"$pip_log" 2>&1; then
    cat "$pip_log" >&2; rm -f "$pip_log"
    say "pip could not install the Python packages (its output is above)"; exit 1
  fi
  rm -f "$pip_log"
  "$VENV/bin/python" -c 'import presculpt.agent.hypervisor.libvirt, torch, grpc' \
    || { say "the Python packages did not install"; exit 1; }
  echo "$want" > "$stamp"
fi
say "ready: $VENV"
