# The two commands of the quick start are `make demo` and `make test`; both install first.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-units test demo protos clean-lab vagrant-lab vagrant-lab-down vagrant-lab-status

install:
	@bash scripts/install.sh

# On a host, as root, after installing the package into /opt/presculpt (README, "Deploying on
# hosts"): the systemd units, their system users and the sample configs in /etc/presculpt/.
# ROLES=agent or ROLES=coordinator installs one of the two (default both).
install-units:
	@bash scripts/install-units.sh $(ROLES)

test: install
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

demo: install
	$(BIN)/presculpt demo $(DEMO_ARGS)

clean-lab: install
	$(BIN)/presculpt lab down

# Regenerate the gRPC stubs in protos/presculpt/v1 after editing a .proto (tests/test_protos.py
# fails while they are stale).
protos: install
	$(BIN)/python -m presculpt.protos_gen

# The multi-host lab under Vagrant (vagrant/README.md): a coordinator and two KVM hosts, installed as
# the README tells operators, over mutual TLS. Builds the box once (cached); slow, so not in `make test`.
# `make vagrant-lab-down` removes what it made; VAGRANT_REMOVE_BOX=1 removes the box and its cache too.
vagrant-lab: install
	@bash vagrant/lab.sh up

vagrant-lab-down:
	@bash vagrant/lab.sh down

vagrant-lab-status:
	@bash vagrant/lab.sh status
