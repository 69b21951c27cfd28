# Two commands for a newcomer: `make serve` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test serve lint proto bench bench-engine clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## test: install into .venv and run the linter and the whole test suite
test: $(STAMP)
	$(BIN)/ruff check service tests benchmarks
	$(BIN)/python -m pytest

## lint: ruff only
lint: $(STAMP)
	$(BIN)/ruff check service tests benchmarks

## bench-engine: engine throughput versus per-sample tf.function and numpy
bench-engine: $(STAMP)
	$(BIN)/hebbian bench engine

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
