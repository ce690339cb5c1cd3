# Helpers of the lab's provisioning scripts (sourced, not run). The install steps here are the
# README's "Deploying on hosts" steps, with the source tree at $SRC (a copy of this repository) and
# pip reading the lab's wheelhouse (see common.sh).

SRC=/srv/presculpt
LAB_CACHE=/var/cache/presculpt-lab
LAB_CERTS=$LAB_CACHE/certs
LAB_STATE=/var/lib/presculpt-lab   # what the lab's provisioning measured and decided
NAME=${PRESCULPT_LAB_NAME:-$(hostname)}

say() { printf '%s: %s\n' "$NAME" "$*" >&2; }
step() { say "-- $*"; }
trap 'say "error: line $LINENO: $BASH_COMMAND failed"' ERR

# README, "Deploying on hosts": the Debian packages (in the box already, so these are no-ops), the
# package into /opt/presculpt, the role's unit, system user and sample config.
install_presculpt() {
  local role=$1
  step "installing Presculpt as the README tells operators (role: $role)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq python3-venv python3-dev gcc pkg-config libvirt-dev make >/dev/null
  if [[ $role == agent ]]; then
    apt-get install -y -qq libvirt-daemon-system qemu-system-x86 >/dev/null
  fi
  python3 -m venv /opt/presculpt
  /opt/presculpt/bin/pip install -q "$SRC"
  make -s -C "$SRC" install-units ROLES="$role"
  # For the lab's own use (presculpt lab, presculpt hosts) from a login shell.
  ln -sf /opt/presculpt/bin/presculpt /opt/presculpt/bin/presculpt-agent /opt/presculpt/bin/presculpt-coordinator \
    /usr/local/bin/
}

# `systemctl enable --now UNIT` as the README says (it returns once the Type=notify daemon is ready);
# a restart when a second provisioning run finds it running, so that it reads the edited config.
start_unit() {
  local unit=$1
  step "starting $unit (systemctl enable --now)"
  if systemctl is-active -q "$unit"; then
    systemctl restart "$unit"
  else
    systemctl enable -q --now "$unit"
  fi
  say "$unit: $(systemctl show -p StatusText --value "$unit")"
}

# This machine's certificate and key and the lab's CA certificate into /etc/presculpt/pki, the key
# owned by the daemon's user (the lab's CA was made on the host driving the lab: vagrant/lab.sh).
install_certificates() {
  local user=$1 pki=/etc/presculpt/pki
  step "installing the certificates of $NAME (the lab's CA, made by \`presculpt certs\` on the lab's host)"
  install -d -m 0755 "$pki"
  install -m 0644 "$LAB_CERTS/ca.crt" "$LAB_CERTS/$NAME.crt" "$pki/"
  install -m 0600 "$LAB_CERTS/$NAME.key" "$pki/"
  chown "$user" "$pki/$NAME.key"
}

# Set keys of an installed config file (section.key=TOML value), as an operator edits it.
configure() {
  python3 "$SRC/vagrant/provision/set-toml.py" "$@"
}
