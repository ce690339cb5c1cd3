#!/usr/bin/env bash
# Builds the Vagrant box of the lab locally (no box can be downloaded here) and adds it to Vagrant,
# unless a box built from this very script is already added.
#
# The box is Debian 12 made with debootstrap: systemd, ssh, a `vagrant` user with Vagrant's insecure
# key and passwordless sudo, DHCP on eth0, and the Debian packages every lab machine needs anyway
# (Python with venv, a compiler, libvirt, QEMU, busybox-static), so that provisioning under software
# emulation does not spend minutes in dpkg. Boot-time traps under TCG are fixed: only an ed25519
# host key is generated at first boot (an RSA key takes some 90 s), e2scrub and apt's timers are
# masked, /etc/machine-id is empty (every machine gets its own). Presculpt's Python dependencies are
# pre-installed into /opt/presculpt from the lab's wheelhouse (built first by wheelhouse.sh).
#
# Usage: build-box.sh [--force]          Environment: PRESCULPT_BOX_NAME, PRESCULPT_VAGRANT_CACHE
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BOX_NAME=${PRESCULPT_BOX_NAME:-presculpt/debian12-lab}
CACHE=${PRESCULPT_VAGRANT_CACHE:-/var/cache/presculpt-vagrant}
WHEELS=$CACHE/wheelhouse  # vagrant/wheelhouse.sh: the project's dependencies, pre-installed in the box
SUITE=bookworm
DISK_GIB=8
# Besides LAB.md's base set: what provisioning would otherwise install under TCG on every machine.
BASE_PACKAGES=systemd-sysv,udev,kmod,ifupdown,isc-dhcp-client,iproute2,iputils-ping,netbase,openssh-server,sudo,linux-image-amd64,ca-certificates
# The README's "Deploying on hosts" apt-get lines (then no-ops in provisioning), and what the lab
# guest image and the lab's scripts use.
LAB_PACKAGES=(python3-venv python3-dev gcc pkg-config libvirt-dev make libvirt-daemon-system qemu-system-x86
  libvirt-daemon-driver-qemu libvirt-clients qemu-utils busybox-static cpio xz-utils gzip dnsmasq-base rsync curl)

say() { printf 'vagrant-box: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
trap 'say "error: line $LINENO: $BASH_COMMAND failed"' ERR

force=0
[[ ${1:-} == --force ]] && force=1
[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, loop devices)"

# The box is identified by the hash of this script: editing it builds a new box.
recipe=$(sha256sum "$0" | cut -c1-12)
stamp=$CACHE/box.recipe
if ((!force)) && [[ -f $stamp && $(cat "$stamp") == "$recipe" ]] \
    && vagrant box list 2>/dev/null | grep "^${BOX_NAME} .*libvirt" >/dev/null; then
  say "box $BOX_NAME is already built and added (recipe $recipe): nothing to do"
  exit 0
fi

for tool in debootstrap qemu-img extlinux parted mkfs.ext4 vagrant; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install debootstrap qemu-utils extlinux syslinux-common parted e2fsprogs vagrant vagrant-libvirt)"
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[[ -f $mbr ]] || die "$mbr is missing (apt-get install syslinux-common)"
vagrant_key=$(dpkg -L vagrant | grep '/keys/vagrant.pub$' | head -n1)
[[ -f $vagrant_key ]] || die "Vagrant's insecure public key is not found in the vagrant package"
# The Debian mirror apt already uses (deb822 URIs: lines, or classic deb lines).
mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | sed -nE 's,^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?://[^[:space:]]*/debian)/?([[:space:]].*)?$,\3,p' \
  | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

work=$CACHE/build
mnt=$work/mnt
loopdev=
cleanup() {
  if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt"; fi
  if [[ -n $loopdev ]]; then losetup -d "$loopdev" 2>/dev/null || true; fi
  for fs in proc sys dev mnt/wheels; do
    if mountpoint -q "$work/root/$fs" 2>/dev/null; then umount -l "$work/root/$fs"; fi
  done
}
trap cleanup EXIT
mkdir -p "$CACHE"
cleanup
rm -rf "$work"
mkdir -p "$work" "$mnt"
root=$work/root
started=$SECONDS

say "[1/6] debootstrap $SUITE from $mirror into $root (about 90 s)"
debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log: $work/debootstrap.log)"; }

say "[2/6] installing the lab's Debian packages and configuring the system ($((SECONDS - started)) s so far)"
for fs in proc sys dev; do mount --rbind "/$fs" "$root/$fs"; done
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"  # start no service inside the chroot
chmod 755 "$root/usr/sbin/policy-rc.d"
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
chroot "$root" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends "${LAB_PACKAGES[@]}" \
  >"$work/apt.log" 2>&1 || { tail -n 20 "$work/apt.log" >&2; die "apt-get install in the chroot failed"; }
chroot "$root" apt-get clean
rm -f "$root/usr/sbin/policy-rc.d"

# pip installing torch and the rest inside a machine under emulation took some 15 minutes per
# machine on a busy 2-core host; here, natively in the chroot, it takes about a minute. The
# README's `python3 -m venv /opt/presculpt` and `pip install SRC` then find the dependencies there.
if compgen -G "$WHEELS/presculpt-*.whl" >/dev/null; then
  say "[3/6] pre-installing Presculpt's Python dependencies into /opt/presculpt ($((SECONDS - started)) s so far)"
  mkdir -p "$root/mnt/wheels"
  mount --bind "$WHEELS" "$root/mnt/wheels"
  chroot "$root" python3 -m venv /opt/presculpt
  chroot "$root" /opt/presculpt/bin/pip install -q --no-index --no-cache-dir --find-links /mnt/wheels presculpt \
    >"$work/pip.log" 2>&1 || { umount "$root/mnt/wheels"; tail -n 20 "$work/pip.log" >&2; die "pip in the chroot failed"; }
  chroot "$root" /opt/presculpt/bin/pip uninstall -q -y presculpt >>"$work/pip.log" 2>&1
  umount "$root/mnt/wheels"
  rmdir "$root/mnt/wheels"
else
  say "[3/6] no wheelhouse in $WHEELS (vagrant/wheelhouse.sh): the machines' pip will install everything"
fi

echo presculpt-box >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 presculpt-box\n' >"$root/etc/hosts"
echo 'LABEL=root / ext4 defaults,noatime,errors=remount-ro 0 1' >"$root/etc/fstab"
cat >"$root/etc/network/interfaces" <<'EOF'
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
EOF
chroot "$root" useradd --create-home --shell /bin/bash --groups sudo vagrant
echo 'vagrant:vagrant' | chroot "$root" chpasswd
install -d -m 700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
install -m 600 -o 1000 -g 1000 "$vagrant_key" "$root/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/vagrant"
chmod 440 "$root/etc/sudoers.d/vagrant"

# ssh: no host keys in the image; one ed25519 key made at first boot (an RSA key takes ~90 s under TCG).
rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/ssh/sshd_config.d/presculpt-box.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
UseDNS no
EOF
cat >"$root/etc/systemd/system/ssh-hostkey-ed25519.service" <<'EOF'
[Unit]
Description=Generate the ed25519 ssh host key at first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=ssh.service
EOF
chroot "$root" systemctl enable ssh-hostkey-ed25519.service >/dev/null 2>&1
# Slow or useless at boot under TCG: e2scrub (~90 s), apt's and fstrim's timers.
for unit in e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer fstrim.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# No libvirt guest network inside the lab machines: the lab's tiny guests have none.
rm -f "$root/etc/libvirt/qemu/networks/autostart/default.xml"
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
kernel=$(cd "$root/boot" && ls vmlinuz-* | sort -V | tail -n1)
initrd=initrd.img-${kernel#vmlinuz-}
[[ -f $root/boot/$initrd ]] || die "no initramfs for $kernel in the image"
for fs in proc sys dev; do umount -l "$root/$fs"; done

say "[4/6] writing a ${DISK_GIB} GiB disk image ($((SECONDS - started)) s so far)"
raw=$work/box.raw
truncate -s "${DISK_GIB}G" "$raw"
parted -s "$raw" mklabel msdos mkpart primary ext4 1MiB 100% set 1 boot on
offset=$((1024 * 1024))
loopdev=$(losetup --find --show --offset "$offset" --sizelimit $(( DISK_GIB * 1024 * 1024 * 1024 - offset )) "$raw")
mkfs.ext4 -q -L root -O ^64bit,^metadata_csum "$loopdev"
mount "$loopdev" "$mnt"
cp -a "$root/." "$mnt/"
mkdir -p "$mnt/boot/extlinux"
cat >"$mnt/boot/extlinux/extlinux.conf" <<EOF
DEFAULT debian
TIMEOUT 1
PROMPT 0
LABEL debian
  LINUX /boot/$kernel
  INITRD /boot/$initrd
  APPEND root=LABEL=root ro net.ifnames=0 biosdevname=0 console=tty0 console=ttyS0,115200 quiet
EOF
extlinux --install "$mnt/boot/extlinux" 2>/dev/null
umount "$mnt"
losetup -d "$loopdev"
loopdev=
dd if="$mbr" of="$raw" bs=440 count=1 conv=notrunc status=none

say "[5/6] converting to qcow2 and packing the box ($((SECONDS - started)) s so far)"
box_dir=$work/box
mkdir -p "$box_dir"
qemu-img convert -O qcow2 "$raw" "$box_dir/box.img"
rm -f "$raw"
printf '{"provider":"libvirt","format":"qcow2","virtual_size":%d}\n' "$DISK_GIB" >"$box_dir/metadata.json"
cat >"$box_dir/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"  # software emulation: nested KVM is unusable on the lab's host
  end
end
EOF
box_file=$CACHE/presculpt-debian12-lab.box
tar -C "$box_dir" -cf "$box_file" metadata.json Vagrantfile box.img
rm -rf "$root" "$box_dir"

say "[6/6] adding box $BOX_NAME ($((SECONDS - started)) s so far)"
vagrant box add --force --name "$BOX_NAME" "$box_file" >/dev/null
echo "$recipe" >"$stamp"
say "box $BOX_NAME ready in $((SECONDS - started)) s ($(du -h "$box_file" | cut -f1) in $box_file)"
