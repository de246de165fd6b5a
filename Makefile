# Two commands do everything on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: setup demo test test-fast fuzz lint dev daemon bench clean

# torch 2.13.0 (CPU build) first: the project's torch range accepts it, so pip never fetches a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps pysc2==4.0.0  # engine backend; its deps are the project's (pyproject)
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	ln -sf ../dagster.yaml $@

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

demo: setup
	$(BIN)/replay-assets demo --days 3

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The inner loop: everything but the tests marked slow (pyproject.toml's markers). CI runs `make test`.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The full fuzz run (make test runs a fixed-seed slice): every source's files damaged 100 ways each plus
# the bombs, each case in a child under an address-space limit; prints cases per source and outcome.
fuzz: setup
	$(BIN)/python -m replay_assets_tests.fuzz --per-seed 100

dev: setup
	$(BIN)/dagster dev -w workspace.yaml

daemon: setup
	$(BIN)/dagster-daemon run -w workspace.yaml

bench: setup
	$(BIN)/python bench/io_manager.py
	$(BIN)/python bench/metta.py
	$(BIN)/python bench/townlet.py
	$(BIN)/python bench/tmrl.py
	$(BIN)/python bench/sc2.py

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) data build *.egg-info
