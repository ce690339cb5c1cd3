#!/usr/bin/env bash
# Provisioning of a lab KVM host (run as root by Vagrant, after common.sh installed the package and
# the unit): libvirt, one tiny lab guest, the agent's certificate and config as the README tells
# operators, and the agent started over mutual TLS.
#
# The lab machine itself runs under software emulation (TCG), so its tiny guest is TCG nested
# inside TCG. PRESCULPT_LAB_NESTED says what to do about it:
#   auto  boot one tiny guest (`presculpt lab up --guests 1`); if it is not ready within
#         PRESCULPT_LAB_NESTED_TIMEOUT_S, remove it and run the agent on libvirt's test driver
#   real  the tiny guest must boot (provisioning fails otherwise)
#   test  run the agent on libvirt's test driver (test:///default) at once
# The measured boot time and the decision are written to /var/lib/presculpt-lab/.
set -euo pipefail
# shellcheck source=vagrant/provision/lib.sh
. /srv/presculpt/vagrant/provision/lib.sh

MODE=${PRESCULPT_LAB_NESTED:-auto}
TIMEOUT_S=${PRESCULPT_LAB_NESTED_TIMEOUT_S:-600}
LAB_IMAGES=/var/lib/libvirt/images/presculpt-lab
install -d -m 755 "$LAB_STATE"

step "libvirt"
systemctl enable -q --now virtlogd.socket libvirtd.socket libvirtd.service
virsh -c qemu:///system version --daemon | sed 's/^/  /' >&2

uri=qemu:///system
if [[ $MODE == auto || $MODE == real ]]; then
  step "booting one tiny lab guest nested under TCG (up to ${TIMEOUT_S} s)"
  # The guest image (a Debian kernel and a busybox initramfs) was built on the host driving the lab;
  # seeding the lab's image cache with it spares each machine the download and the compiler.
  install -d -m 755 "$LAB_IMAGES"
  cp -a "$LAB_CACHE/lab-image/." "$LAB_IMAGES/"
  presculpt lab down >/dev/null 2>&1 || true
  started=$(date +%s.%N)
  if presculpt lab up --guests 1 --ready-timeout-s "$TIMEOUT_S" -v 2>"$LAB_STATE/lab-up.log"; then
    seconds=$(python3 -c "print(round($(date +%s.%N) - $started, 1))")
    ready=$(sed -nE 's/.* ready in ([0-9.]+) s.*/\1/p' "$LAB_STATE/lab-up.log" | head -n1)
    printf 'nested tiny guest: ready %s s after it was started; lab up took %s s\n' "${ready:-?}" "$seconds" \
      | tee "$LAB_STATE/nested-boot.txt" >&2
  else
    seconds=$(python3 -c "print(round($(date +%s.%N) - $started, 1))")
    tail -n 5 "$LAB_STATE/lab-up.log" >&2
    printf 'nested tiny guest: NOT ready after %s s (timeout %s s)\n' "$seconds" "$TIMEOUT_S" \
      | tee "$LAB_STATE/nested-boot.txt" >&2
    presculpt lab down >/dev/null 2>&1 || true
    if [[ $MODE == real ]]; then
      say "error: PRESCULPT_LAB_NESTED=real and the nested guest did not boot"
      exit 1
    fi
    uri=test:///default
    say "falling back to libvirt's test driver ($uri): \`presculpt hosts\` labels this host so"
  fi
else
  uri=test:///default
  echo "nested tiny guest: not tried (PRESCULPT_LAB_NESTED=test)" >"$LAB_STATE/nested-boot.txt"
fi
echo "$uri" >"$LAB_STATE/libvirt-uri"

install_certificates presculpt-agent
step "configuring /etc/presculpt/agent.toml (libvirt $uri, the coordinator over mutual TLS)"
pki=/etc/presculpt/pki
configure /etc/presculpt/agent.toml "uri=\"$uri\"" "stream.coordinator=\"$PRESCULPT_LAB_COORDINATOR\"" \
  "tls.ca=\"$pki/ca.crt\"" "tls.cert=\"$pki/$NAME.crt\"" "tls.key=\"$pki/$NAME.key\""

start_unit presculpt-agent
