# Two commands: `make bench` runs the benchmark, `make test` runs the tests.
# Each creates .venv and installs the project into it on first use (again
# only when pyproject.toml changes). Pass pytest arguments with ARGS="...".
PYTHON ?= python3
VENV ?= .venv
# torch is installed first so you can pick the build, e.g. a CPU wheel:
#   make test TORCH_SPEC="torch==2.13.0"
TORCH_SPEC ?= torch
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RESULTS ?= results/latest.json
# `make bench` replays what is recorded in cassettes/ and records what is
# missing (needs the model's key); RECORD_MODE=none replays only.
RECORD_MODE ?= once

.PHONY: install bench test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[hf,dev]"
	touch $(STAMP)

bench: $(STAMP)
	$(BIN)/python -m pytest cases --record-mode $(RECORD_MODE) --results $(RESULTS) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest tests $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache results
