# Two entry points a newcomer needs: `make demo` and `make test`. Each builds .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-network demo-intel test lint proto clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python scripts/gen_proto.py --check
	$(BIN)/ruff check .
	$(BIN)/mypy ballistics index server
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# Three sovereign servers on loopback searching each other under agreements (server/federation.py)
demo-network: $(STAMP)
	$(BIN)/python scripts/demo_network.py --json out/demo-network.json

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy ballistics index server

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) out

# Crime-gun intelligence: a recovered firearm, its test fires, the series and the hub report
demo-intel: $(STAMP)
	$(BIN)/python scripts/demo_intel.py
