#!/usr/bin/env bash
# The Vagrant multi-host lab (`make vagrant-lab`, `make vagrant-lab-down`):
#
#   lab.sh up      build the box (once), the wheelhouse and the lab's certificates, bring up the
#                  coordinator and the KVM hosts, and print `presculpt hosts` as the coordinator sees it
#   lab.sh down    remove everything `up` made: machines, networks, the storage pool and its
#                  volumes (the uploaded box too); with VAGRANT_REMOVE_BOX=1 the box and its cache too
#   lab.sh status  `vagrant status` and `presculpt hosts` on the coordinator
#
# Must run as root (libvirt's system connection, debootstrap). Everything it makes is named
# presculpt-vagrant* in libvirt and lives under $PRESCULPT_VAGRANT_CACHE (default
# /var/cache/presculpt-vagrant) on this machine.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export PRESCULPT_VAGRANT_CACHE=${PRESCULPT_VAGRANT_CACHE:-/var/cache/presculpt-vagrant}
export PRESCULPT_BOX_NAME=${PRESCULPT_BOX_NAME:-presculpt/debian12-lab}
export PRESCULPT_VAGRANT_POOL=${PRESCULPT_VAGRANT_POOL:-presculpt-vagrant}
export VAGRANT_CWD=$HERE
export VAGRANT_DEFAULT_PROVIDER=libvirt
CACHE=$PRESCULPT_VAGRANT_CACHE
POOL=$PRESCULPT_VAGRANT_POOL
POOL_DIR=/var/lib/libvirt/images/$POOL
MGMT_NETWORK=presculpt-vagrant-mgmt  # as named in the Vagrantfile, with its subnet
MGMT_GATEWAY=192.168.158.1
SUBNET=192.168.157  # the private network: coordinator .10, hostN .10+N (as in the Vagrantfile)
WHEELS_PORT=7683
NETWORKS=(presculpt-vagrant "$MGMT_NETWORK")
DOMAIN_PREFIX=presculpt-vagrant-
HOSTS=${PRESCULPT_LAB_HOSTS:-2}
MACHINES=(coordinator $(seq -f 'host%g' 1 "$HOSTS"))
PYTHON=$REPO/.venv/bin/python
PRESCULPT=$REPO/.venv/bin/presculpt
DEBIAN_PACKAGES=(vagrant vagrant-libvirt debootstrap dnsmasq-base extlinux syslinux-common parted qemu-utils rsync)
VIRSH=(virsh -q -c qemu:///system)

say() { printf 'vagrant-lab: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
trap 'say "error: line $LINENO: $BASH_COMMAND failed"' ERR

[[ $(id -u) -eq 0 ]] || die "run as root"

ensure_packages() {
  local missing=() pkg
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  [[ -x $PRESCULPT ]] || die "$PRESCULPT is missing: run make install first"
}

ensure_libvirt() {
  "$PYTHON" -c 'from presculpt.lab.lab import ensure_libvirt_running; ensure_libvirt_running()'
}

ensure_pool() {
  if ! "${VIRSH[@]}" pool-info "$POOL" >/dev/null 2>&1; then
    say "creating libvirt storage pool $POOL in $POOL_DIR"
    "${VIRSH[@]}" pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
    "${VIRSH[@]}" pool-build "$POOL" >/dev/null
  fi
  "${VIRSH[@]}" pool-info "$POOL" | grep 'State:.*running' >/dev/null || "${VIRSH[@]}" pool-start "$POOL" >/dev/null
}

# The box's volume in the pool is uploaded by vagrant-libvirt once and then reused by name: drop
# it when the box was rebuilt since.
drop_stale_box_volume() {
  local recipe uploaded=$CACHE/box.uploaded
  recipe=$(cat "$CACHE/box.recipe")
  if [[ -f $uploaded && $(cat "$uploaded") != "$recipe" ]]; then
    box_volumes | while read -r vol; do
      say "removing the stale box volume $vol"
      "${VIRSH[@]}" vol-delete --pool "$POOL" "$vol" >/dev/null
    done
  fi
  echo "$recipe" >"$uploaded"
}

box_volumes() {
  "${VIRSH[@]}" vol-list --pool "$POOL" 2>/dev/null | awk '{print $1}' | grep '_vagrant_box_image_' || true
}

# The tiny lab guest's image (kernel + busybox initramfs), built here once and seeded into the hosts.
lab_image() {
  local dest=$CACHE/lab-image
  say "lab guest image: building or reusing it here"
  "$PYTHON" - "$dest" <<'EOF'
import shutil, sys
from pathlib import Path
from presculpt.lab.image import DEFAULT_CACHE_DIR, ensure_image
image = ensure_image()
dest = Path(sys.argv[1])
shutil.rmtree(dest, ignore_errors=True)
for sub in (image.kernel_path.parent, image.initrd_path.parent):
    shutil.copytree(sub, dest / sub.relative_to(DEFAULT_CACHE_DIR))
print(f"vagrant-lab: lab guest image {image.kernel_version}-{image.key}", file=sys.stderr)
EOF
}

# The lab's PKI: a CA here on the host driving the lab and one certificate per machine (with its
# name and private address), plus an operator's client certificate for the coordinator machine.
# Each machine gets only the CA certificate and its own certificates and keys (synced by Vagrant).
certificates() {
  local pki=$CACHE/pki ca=$CACHE/pki/ca machine i=0
  say "certificates: a CA and per-machine certificates in $ca (presculpt certs)"
  mkdir -p "$pki"
  [[ -f $ca/ca.crt ]] || "$PRESCULPT" certs init --dir "$ca" >&2
  for machine in "${MACHINES[@]}"; do
    [[ -f $ca/$machine.crt ]] || "$PRESCULPT" certs issue "$machine" --ip "$SUBNET.$((10 + i))" --dir "$ca" >&2
    i=$((i + 1))
    rm -rf "${pki:?}/$machine"
    mkdir -p "$pki/$machine"
    cp "$ca/ca.crt" "$ca/$machine.crt" "$ca/$machine.key" "$pki/$machine/"
  done
  [[ -f $ca/operator.crt ]] || "$PRESCULPT" certs issue operator --client --dir "$ca" >&2
  cp "$ca/operator.crt" "$ca/operator.key" "$pki/coordinator/"
}

# Vagrant's management network (ssh and NAT), made here rather than by vagrant-libvirt so that the
# wheelhouse can be served on its gateway before the machines boot; vagrant-libvirt reuses it by name.
ensure_mgmt_network() {
  if ! "${VIRSH[@]}" net-info "$MGMT_NETWORK" >/dev/null 2>&1; then
    say "creating libvirt network $MGMT_NETWORK ($MGMT_GATEWAY/24, NAT)"
    local xml=$CACHE/$MGMT_NETWORK.xml
    cat >"$xml" <<EOF
<network>
  <name>$MGMT_NETWORK</name>
  <forward mode='nat'/>
  <ip address='$MGMT_GATEWAY' netmask='255.255.255.0'>
    <dhcp><range start='${MGMT_GATEWAY%.1}.2' end='${MGMT_GATEWAY%.1}.254'/></dhcp>
  </ip>
</network>
EOF
    "${VIRSH[@]}" net-define "$xml" >/dev/null
  fi
  "${VIRSH[@]}" net-info "$MGMT_NETWORK" | grep 'Active:.*yes' >/dev/null || "${VIRSH[@]}" net-start "$MGMT_NETWORK" >/dev/null
}

# Serve the wheelhouse over HTTP on the management network's gateway until this script exits.
serve_wheels() {
  "$PYTHON" -m http.server "$WHEELS_PORT" --bind "$MGMT_GATEWAY" --directory "$CACHE/wheelhouse" \
    >"$CACHE/wheels-http.log" 2>&1 &
  wheels_server=$!
  trap 'kill "$wheels_server" 2>/dev/null || true' EXIT
  say "serving the wheelhouse at http://$MGMT_GATEWAY:$WHEELS_PORT/ (pid $wheels_server)"
}

wait_for_hosts() {
  local timeout=${1:-600} start=$SECONDS
  say "waiting until the coordinator sees all $HOSTS hosts connected (up to $timeout s)"
  until vagrant ssh coordinator -c "presculpt hosts --json" 2>/dev/null \
      | python3 -c 'import json,sys; h=json.load(sys.stdin); sys.exit(0 if sum(x["connected"] for x in h) >= int(sys.argv[1]) else 1)' "$HOSTS"; do
    ((SECONDS - start < timeout)) || { say "not every host connected after $timeout s"; return 1; }
    sleep 5
  done
}

show_hosts() {
  local machine
  for machine in "${MACHINES[@]:1}"; do
    say "$machine: $(vagrant ssh "$machine" -c 'cat /var/lib/presculpt-lab/nested-boot.txt' 2>/dev/null | tr -d '\r')"
  done
  vagrant ssh coordinator -c "presculpt hosts; presculpt hosts --json" 2>/dev/null
}

cmd_up() {
  local started=$SECONDS
  ensure_packages
  ensure_libvirt
  say "wheelhouse: the Python packages for the machines"
  "$HERE/wheelhouse.sh"
  "$HERE/build-box.sh"
  ensure_pool
  drop_stale_box_volume
  lab_image
  certificates
  ensure_mgmt_network
  serve_wheels
  say "vagrant up: ${MACHINES[*]} (software emulation; provisioning output follows) after $((SECONDS - started)) s"
  # (The box upload's progress bar, thousands of carriage-return updates, is dropped.)
  vagrant up --provider=libvirt "${MACHINES[@]}" 2>&1 | sed -u -E 's/(\x1b\[K)?Progress: [0-9]+%//g'
  wait_for_hosts
  say "lab up in $((SECONDS - started)) s; the coordinator's \`presculpt hosts\`:"
  show_hosts
}

cmd_down() {
  local dom net vol
  if [[ -d $HERE/.vagrant/machines ]]; then
    say "vagrant destroy"
    vagrant destroy -f >&2 || say "vagrant destroy failed; removing what is left through libvirt"
  fi
  # Whatever is left (an interrupted up, a lost .vagrant folder): by name.
  for dom in $("${VIRSH[@]}" list --all --name | grep "^$DOMAIN_PREFIX" || true); do
    say "removing domain $dom"
    "${VIRSH[@]}" destroy "$dom" >/dev/null 2>&1 || true
    "${VIRSH[@]}" undefine "$dom" --remove-all-storage --nvram >/dev/null 2>&1 \
      || "${VIRSH[@]}" undefine "$dom" >/dev/null 2>&1 || true
  done
  for net in "${NETWORKS[@]}"; do
    if "${VIRSH[@]}" net-info "$net" >/dev/null 2>&1; then
      say "removing network $net"
      "${VIRSH[@]}" net-destroy "$net" >/dev/null 2>&1 || true
      "${VIRSH[@]}" net-undefine "$net" >/dev/null
    fi
  done
  if "${VIRSH[@]}" pool-info "$POOL" >/dev/null 2>&1; then
    "${VIRSH[@]}" pool-info "$POOL" | grep 'State:.*running' >/dev/null || "${VIRSH[@]}" pool-start "$POOL" >/dev/null
    for vol in $("${VIRSH[@]}" vol-list --pool "$POOL" | awk '{print $1}'); do
      say "removing volume $vol"
      "${VIRSH[@]}" vol-delete --pool "$POOL" "$vol" >/dev/null
    done
    say "removing storage pool $POOL"
    "${VIRSH[@]}" pool-destroy "$POOL" >/dev/null 2>&1 || true
    "${VIRSH[@]}" pool-delete "$POOL" >/dev/null 2>&1 || true
    "${VIRSH[@]}" pool-undefine "$POOL" >/dev/null
  fi
  rm -f "$CACHE/box.uploaded"
  rm -rf "$HERE/.vagrant"
  if [[ ${VAGRANT_REMOVE_BOX:-0} == 1 ]]; then
    if vagrant box list 2>/dev/null | grep "^$PRESCULPT_BOX_NAME " >/dev/null; then
      say "removing box $PRESCULPT_BOX_NAME"
      vagrant box remove --force --all "$PRESCULPT_BOX_NAME" >&2
    fi
    say "removing the cache $CACHE (box file, wheelhouse, certificates)"
    rm -rf "$CACHE"
  fi
  say "lab down"
}

cmd_status() {
  vagrant status
  show_hosts
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
