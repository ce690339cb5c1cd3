#!/usr/bin/env bash
# Provisioning shared by every lab machine (run as root by Vagrant): names on the private network,
# pip pointed at the lab's wheelhouse alone, and Presculpt installed the way the README's "Deploying
# on hosts" tells operators to, with the unit of the machine's role. The role's script
# (coordinator.sh, host.sh) then installs the certificates, edits the config and starts the daemon.
set -euo pipefail
# Vagrant uploads this script alone; its helpers come with the synced source tree.
# shellcheck source=vagrant/provision/lib.sh
. /srv/presculpt/vagrant/provision/lib.sh

step "hostname $NAME and names on the private network"
echo "$NAME" >/etc/hostname
hostname "$NAME"
sed -i "s/^127\.0\.1\.1 .*/127.0.1.1 $NAME/" /etc/hosts
sed -i '/# presculpt-lab$/d' /etc/hosts
while read -r line; do
  [[ -n $line ]] && echo "$line # presculpt-lab" >>/etc/hosts
done <<<"$PRESCULPT_LAB_ETC_HOSTS"

step "pip installs from the lab's wheelhouse only (nothing is downloaded from PyPI)"
wheels_host=${PRESCULPT_LAB_WHEELS_URL#*://}
wheels_host=${wheels_host%%[:/]*}
cat >/etc/pip.conf <<EOF
[global]
no-index = true
find-links = $PRESCULPT_LAB_WHEELS_URL
trusted-host = $wheels_host
disable-pip-version-check = true
no-cache-dir = true
EOF

# Whether the lab machines can reach Debian and PyPI through libvirt's NAT (informational:
# provisioning needs neither).
for url in http://deb.debian.org/debian/dists/bookworm/Release https://pypi.org/simple/pip/; do
  if curl -fsS -o /dev/null --max-time 10 "$url" 2>/dev/null; then
    say "network: $url reachable through the NAT"
  else
    say "network: $url NOT reachable"
  fi
done

if [[ $PRESCULPT_LAB_ROLE == host ]]; then
  install_presculpt agent
else
  install_presculpt coordinator
fi
