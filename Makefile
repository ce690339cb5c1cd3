# The two commands of the quick start are `make demo` and `make test`; both install first.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test demo protos clean-lab

install:
	@bash scripts/install.sh

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
