#!/usr/bin/env bash
# Installs Presculpt's systemd units on a host, as README ("Deploying on hosts") describes: for each
# role (agent, coordinator; default both) the unit into /etc/systemd/system, its system user
# (sysusers.d, created at once with systemd-sysusers) and the sample config as
# /etc/presculpt/ROLE.toml unless a config is already there. The package itself goes into
# /opt/presculpt first (python3 -m venv /opt/presculpt && /opt/presculpt/bin/pip install ...).
# Idempotent. DESTDIR=DIR installs the files under DIR only (no users, no daemon-reload).
#
#   scripts/install-units.sh [agent] [coordinator]        (also: make install-units ROLES=agent)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'install-units: %s\n' "$*" >&2; }

roles=("$@")
((${#roles[@]})) || roles=(agent coordinator)
for role in "${roles[@]}"; do
  [[ $role == agent || $role == coordinator ]] || { say "unknown role '$role' (agent or coordinator)"; exit 2; }
done

root=${DESTDIR:-}
sysusers=()
for role in "${roles[@]}"; do
  install -D -m 0644 "systemd/presculpt-$role.service" "$root/etc/systemd/system/presculpt-$role.service"
  if [[ $role == agent ]]; then users=presculpt-agent; else users=presculpt; fi
  install -D -m 0644 "systemd/$users.sysusers.conf" "$root/etc/sysusers.d/$users.conf"
  sysusers+=("/etc/sysusers.d/$users.conf")
  config=$root/etc/presculpt/$role.toml
  if [[ -e $config ]]; then
    say "kept the existing $config"
  else
    install -D -m 0644 "config/$role.sample.toml" "$config"
    say "installed $config (from config/$role.sample.toml)"
  fi
  say "installed presculpt-$role.service"
done

if [[ -z $root ]]; then
  systemd-sysusers "${sysusers[@]}"
  if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
  else
    say "systemd is not running here: units installed, not loaded"
  fi
fi
for role in "${roles[@]}"; do
  say "next: edit /etc/presculpt/$role.toml, then: systemctl enable --now presculpt-$role"
done
