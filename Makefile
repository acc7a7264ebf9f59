# Everything runs in the virtual environment at .venv, created on first use.
PYTHON ?= python3
# the CPU build of torch that pip takes from this machine's disk; on a GPU host set
# TORCH_SPEC to the build you want (e.g. TORCH_SPEC='torch==2.13.0' from your index)
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
# the simulator alone (what `make demo` needs), then everything the tests use on top
SIM_STAMP := $(VENV)/.sim-stamp
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint format bench clean

$(SIM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(SIM_STAMP)

# the test tools, the reference models (torch), serve/observe and openpi-client
$(STAMP): $(SIM_STAMP)
	$(BIN)/python -m pip install --quiet '$(TORCH_SPEC)'
	$(BIN)/python -m pip install --quiet -e '.[dev,models,serve,openpi]'
# openpi-client without its numpy<2 pin (see pyproject.toml, extra "openpi")
	$(BIN)/python -m pip install --quiet --no-deps openpi-client==0.1.2
	touch $(STAMP)

## demo: set up the simulator (no torch) and run the quickstart scenario (outputs in runs/quickstart)
demo: $(SIM_STAMP)
	$(BIN)/batchsim run scenarios/quickstart.yaml --out runs/quickstart

## test: set up, lint and run the whole test suite
test: $(STAMP)
	$(BIN)/ruff check sim tests benchmarks scripts examples notebooks
	$(BIN)/ruff format --check sim tests benchmarks scripts examples notebooks
	$(BIN)/python -m pytest -n 2 -q

## test-fast: the inner loop, under a minute: lint, then every test not marked slow, torch,
## network or notebook (CI runs `make test`, which runs them all)
test-fast: $(STAMP)
	$(BIN)/ruff check sim tests benchmarks scripts examples notebooks
	$(BIN)/python -m pytest -n 2 -q -m "not slow and not torch and not network and not notebook"

lint: $(STAMP)
	$(BIN)/ruff check sim tests benchmarks scripts examples notebooks

format: $(STAMP)
	$(BIN)/ruff format sim tests benchmarks scripts examples notebooks
	$(BIN)/ruff check --fix sim tests benchmarks scripts examples notebooks

## bench: the engine benchmark (open loop, robot fleet, 10M-request memory), the sweep benchmark and how fast over-limit work is refused
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_refusal.py
	$(BIN)/python benchmarks/bench_recommend.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
