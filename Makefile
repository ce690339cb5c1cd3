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
