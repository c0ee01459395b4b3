# The two set-up commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Each creates or refreshes the local virtual environment by itself.
PYTHON      ?= python3
VENV        ?= .venv
# On this project's CI machines `torch==2.13.0` is a CPU build read from local disk. GPU users: see README
# ("Installing torch for a GPU"), e.g. make test TORCH_SPEC=torch==2.13.0 TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC  ?= torch==2.13.0
TORCH_PIP_ARGS ?=
DEMO_ARGS   ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin

.PHONY: demo test venv lint bench clean

$(BIN)/.mapo-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

venv: $(BIN)/.mapo-installed

demo: $(BIN)/.mapo-installed
	$(BIN)/mapo demo $(DEMO_ARGS)

test: $(BIN)/.mapo-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.mapo-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(BIN)/.mapo-installed
	$(BIN)/python benchmarks/probe_overhead.py
	$(BIN)/python benchmarks/pos_gate_throughput.py
	$(BIN)/python benchmarks/step_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist src/*.egg-info
