#!/usr/bin/env bash
# Provisioning of the lab's coordinator (run as root by Vagrant, after common.sh installed the
# package and the unit): its certificate and config as the README tells operators, the coordinator
# started over mutual TLS on the private network, and an operator's client certificate for the
# vagrant user, so that `vagrant ssh coordinator -c 'presculpt hosts'` works as is.
set -euo pipefail
# shellcheck source=vagrant/provision/lib.sh
. /srv/presculpt/vagrant/provision/lib.sh

install_certificates presculpt
step "configuring /etc/presculpt/coordinator.toml (listen on the private network, mutual TLS)"
pki=/etc/presculpt/pki
configure /etc/presculpt/coordinator.toml 'listen="0.0.0.0:7600"' 'metrics_listen="0.0.0.0:9760"' \
  "tls.ca=\"$pki/ca.crt\"" "tls.cert=\"$pki/$NAME.crt\"" "tls.key=\"$pki/$NAME.key\""

# Under software emulation the coordinator's event loop stalled for more than the unit's 30 s
# watchdog every couple of minutes (7 watchdog restarts in the first 15 minutes of the lab): a
# drop-in, the way the README says to change a unit, gives this emulated machine 5 minutes.
step "a drop-in for this emulated machine: WatchdogSec=300s"
install -d -m 0755 /etc/systemd/system/presculpt-coordinator.service.d
printf '[Service]\nWatchdogSec=300s\n' >/etc/systemd/system/presculpt-coordinator.service.d/vagrant-lab.conf
systemctl daemon-reload
start_unit presculpt-coordinator

step "an operator's client certificate for the vagrant user (presculpt hosts, vms, ...)"
operator_pki=/home/vagrant/.presculpt/pki
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.presculpt "$operator_pki"
install -m 0644 -o vagrant -g vagrant "$LAB_CERTS/ca.crt" "$LAB_CERTS/operator.crt" "$operator_pki/"
install -m 0600 -o vagrant -g vagrant "$LAB_CERTS/operator.key" "$operator_pki/"
cat >/etc/profile.d/presculpt-lab.sh <<EOF2
# The lab's operator: the coordinator on this machine, the vagrant user's client certificate.
if [ "\$(id -un)" = vagrant ]; then
  export PRESCULPT_COORDINATOR=coordinator:7600 PRESCULPT_PKI=$operator_pki
fi
EOF2
