# One entry point: every target installs what it needs on a fresh machine, then runs.
#   make serve       the translation service on the bundles in models/ (http://127.0.0.1:8000)
#   make test        virtualenv + torch + the package + redis-server, haproxy, wrk; lint; the test suite
#   make translate   translate stdin with the default bundle (or MODEL=path/to/bundle)
#   make setup       just the virtualenv
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch from PyTorch's CPU wheel index: PyPI's own torch wheel for Linux is the
# CUDA build, which pulls several GB of NVIDIA wheels. For CUDA: `make setup TORCH_INDEX=` (PyPI's
# build) or TORCH_INDEX=https://download.pytorch.org/whl/cu128. The index is an extra one, so pip
# still finds a local copy of the same pin where the machine has one (and the index is unreachable).
# --no-deps: only torch comes from that index (its dependencies come from PyPI with the package's).
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
MODEL ?= $(firstword $(wildcard models/transformer-en-de) $(wildcard runs/*/bundle))

.PHONY: setup system-tools lint test translate serve clean

HOST ?= 127.0.0.1
PORT ?= 8000

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-deps $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# The service's tests run real servers and tools: redis-server, haproxy (the load balancer in front
# of two instances), wrk (the load generator of benchmarks/serve_load.py), and Chromium with its
# chromedriver (the page's browser test); install what is missing. COMMAND:PACKAGE where they differ.
SYSTEM_TOOLS := redis-server haproxy wrk chromium chromedriver:chromium-driver
system-tools:
	@missing=$$(for tool in $(SYSTEM_TOOLS); do command -v $${tool%%:*} >/dev/null || echo $${tool#*:}; done); \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi
	@redis-server --version && haproxy -v | head -1 && wrk --version 2>&1 | head -1 || true

lint: setup
	$(BIN)/ruff check nmt serving tests benchmarks
	$(BIN)/ruff format --check nmt serving tests benchmarks
	$(BIN)/mypy nmt serving

# The suite runs as TEST_WORKERS pytest processes (pytest-xdist), each test file whole on one of
# them (--dist loadfile: a module's servers and fixtures stay in one process). Most of its time is
# spent waiting on subprocesses (servers, trainings, benchmarks), so 2 on a 2-core box take about
# half the time of 1 (1,139 s -> 599 s measured, same 1,130 tests passed). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: setup system-tools lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# The service on every bundle in models/, ONNX Runtime on the CPU, an in-process cache unless
# NMT_REDIS_URL is set; other NMT_* settings pass through the environment.
serve: setup
	$(BIN)/nmt serve --models models --host $(HOST) --port $(PORT)

translate: setup
	@test -n "$(MODEL)" || { echo "make translate: no bundle under models/ or runs/; pass MODEL=path" >&2; exit 1; }
	@$(BIN)/nmt translate --model "$(MODEL)"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
