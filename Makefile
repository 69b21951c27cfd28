# Two commands for a newcomer: `make serve` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test serve lint proto bench bench-engine clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# buf (proto linter, npm package @bufbuild/buf) for tests/unit/test_buf_lint.py; without npm
# that test is skipped with its reason.
$(BUF):
	@if command -v npm >/dev/null; then \
	  npm install --no-save --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION); \
	else echo "npm not found: the buf lint test will be skipped"; fi

## test: install into .venv and run the linter and the whole test suite
test: $(STAMP) $(BUF)
	$(BIN)/ruff check service tests benchmarks
	$(BIN)/python -m pytest

## serve: install into .venv and start the server (model `default`, gRPC 127.0.0.1:50051,
## metrics :9464); pass flags with ARGS, e.g. make serve ARGS="--port 50052"
serve: $(STAMP)
	$(BIN)/hebbian serve $(ARGS)

## proto: regenerate service/api/ from protos/ (a unit test fails when they drift)
proto: $(STAMP)
	$(BIN)/python -m service.api.generate

## lint: ruff only
lint: $(STAMP)
	$(BIN)/ruff check service tests benchmarks

## bench-engine: engine throughput versus per-sample tf.function and numpy
bench-engine: $(STAMP)
	$(BIN)/hebbian bench engine

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .tools
