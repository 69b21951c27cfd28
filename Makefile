# Two commands for a newcomer: `make serve` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
CHECKOV_VERSION := 3.3.30
CHECKOV := .tools/checkov/bin/checkov
PROMETHEUS := .tools/.prometheus-installed
HAPROXY := .tools/.haproxy-installed

.PHONY: test serve lint proto deploy-rules lock bench bench-engine clean test-image

# The exact versions of requirements.lock, then the project itself without resolving again.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --requirement requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e '.[keras,plot,test]'
	$(BIN)/python -m pip check
	touch $(STAMP)

## lock: re-resolve pyproject.toml's ranges into .venv and write requirements.lock from it
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -e '.[keras,plot,test]'
	{ sed -n '/^#/p' requirements.lock; $(BIN)/python -m pip freeze --all --exclude-editable --exclude pip; } \
	  > requirements.lock.new && mv requirements.lock.new requirements.lock
	touch $(STAMP)

# buf (proto linter, npm package @bufbuild/buf) for tests/unit/test_buf_lint.py; without npm
# that test is skipped with its reason.
$(BUF):
	@if command -v npm >/dev/null; then \
	  npm install --no-save --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION); \
	else echo "npm not found: the buf lint test will be skipped"; fi

# checkov (tests/deploy) in a virtual environment of its own: its many pinned dependencies
# would clash with ours.
$(CHECKOV):
	$(PYTHON) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install --quiet --upgrade pip
	.tools/checkov/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)

# promtool and prometheus (tests/deploy) from Debian's `prometheus` package, installed with
# apt-get as root; without them their tests are skipped with the reason.
$(PROMETHEUS):
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then \
	  mkdir -p .tools && touch $@; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	      --no-install-recommends prometheus && mkdir -p .tools && touch $@; } \
	  || echo "apt-get install prometheus failed: the promtool/Prometheus tests will be skipped"; \
	else echo "promtool/prometheus missing (Debian package prometheus, as root): their tests will be skipped"; fi

# haproxy (tests/sharding: the gRPC router of a sharded deployment) from Debian's `haproxy`
# package, installed with apt-get as root like prometheus; without it those tests are skipped.
$(HAPROXY):
	@if command -v haproxy >/dev/null; then \
	  mkdir -p .tools && touch $@; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	      --no-install-recommends haproxy && mkdir -p .tools && touch $@; } \
	  || echo "apt-get install haproxy failed: the HAProxy router tests will be skipped"; \
	else echo "haproxy missing (Debian package haproxy, as root): its tests will be skipped"; fi

## test: install into .venv and run the linter and the whole test suite
test: $(STAMP) $(BUF) $(CHECKOV) $(PROMETHEUS) $(HAPROXY)
	$(BIN)/ruff check service tests examples
	$(BIN)/python -m pytest

## test-image: build deploy/Dockerfile with podman and run the image read-only (minutes;
## as root on Debian it installs podman, runc and debootstrap first)
test-image: $(STAMP)
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null \
	  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap; }
	HEBBIAN_IMAGE_TEST=1 $(BIN)/python -m pytest -v tests/deploy/test_image.py

## serve: install into .venv and start the server (model `default`, gRPC 127.0.0.1:50051,
## metrics :9464); pass flags with ARGS, e.g. make serve ARGS="--port 50052"
serve: $(STAMP)
	$(BIN)/hebbian serve $(ARGS)

## proto: regenerate service/api/ from protos/ (a unit test fails when they drift)
proto: $(STAMP)
	$(BIN)/python -m service.api.generate

## deploy-rules: regenerate deploy/k8s/prometheusrule.yaml from deploy/prometheus/hebbian-rules.yaml
## (a test fails when they drift)
deploy-rules: $(STAMP)
	$(BIN)/python deploy/prometheus/make_prometheusrule.py

## lint: ruff only
lint: $(STAMP)
	$(BIN)/ruff check service tests examples

## bench: the service end to end against a bare gRPC echo server, side by side, with
## PASS/FAIL per target (a few minutes); flags with ARGS, e.g. make bench ARGS="--json"
bench: $(STAMP)
	$(BIN)/hebbian bench $(ARGS)

## bench-engine: engine throughput versus per-sample tf.function and numpy
bench-engine: $(STAMP)
	$(BIN)/hebbian bench engine

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .tools
