# Two commands: `make bench` runs the benchmark, `make test` runs the tests
# (`make perf` times the project's own performance tests, tests/perf).
# Each creates .venv and installs the project into it on first use (again
# only when pyproject.toml changes). Pass pytest arguments with ARGS="...".
PYTHON ?= python3
VENV ?= .venv
# torch is installed first so you can pick the build, e.g. a CPU wheel:
#   make test TORCH_SPEC="torch==2.13.0"
TORCH_SPEC ?= torch
# HF=0: API models only (GPT-4o, vLLM, ...): no torch, no transformers. The
# tests of the local-model provider are then skipped.
HF ?= 1
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-hf$(HF)
RESULTS ?= results/latest.json
# `make bench` replays what is recorded in cassettes/ and records what is
# missing (needs the model's key); RECORD_MODE=none replays only.
RECORD_MODE ?= once
# `make perf` saves each run under .benchmarks/ (numbered 0001, 0002, ...);
# COMPARE=0001 compares with that run and fails when a mean is COMPARE_FAIL worse;
# SAVE=name saves the run under that name instead of a number.
COMPARE ?=
COMPARE_FAIL ?= mean:20%
SAVE ?=

.PHONY: install bench test perf clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifeq ($(HF),1)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[hf,dev]"
else
	$(BIN)/python -m pip install --quiet -e ".[dev]"
endif
	touch $(STAMP)

bench: $(STAMP)
	$(BIN)/python -m pytest cases --record-mode $(RECORD_MODE) --bench-results $(RESULTS) $(ARGS)

# tests/perf run once, at toy size, untimed (--benchmark-disable in pyproject's addopts);
# the tests run on every core (pytest-xdist), TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) $(ARGS)

perf: $(STAMP)
	$(BIN)/python -m pytest tests/perf --benchmark-enable \
		$(if $(SAVE),--benchmark-save=$(SAVE),--benchmark-autosave) \
		--benchmark-columns=min,mean,stddev,rounds --benchmark-group-by=group \
		$(if $(COMPARE),--benchmark-compare=$(COMPARE) --benchmark-compare-fail=$(COMPARE_FAIL)) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks results
