# One entry point: every target installs what it needs on a fresh machine, then runs.
#   make serve       the translation service on the bundles in models/ (http://127.0.0.1:8000)
#   make test        virtualenv + torch + the package + redis-server, then lint and the test suite
#   make translate   translate stdin with the default bundle (or MODEL=path/to/bundle)
#   make setup       just the virtualenv
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch (a looser pin pulls a multi-GB CUDA build); `make setup TORCH=torch` for CUDA.
TORCH ?= torch==2.13.0
MODEL ?= $(firstword $(wildcard models/transformer-en-de) $(wildcard runs/*/bundle))

.PHONY: setup redis lint test translate serve clean

HOST ?= 127.0.0.1
PORT ?= 8000

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# The service's tests run a real redis-server; install it when the machine has none.
redis:
	@command -v redis-server >/dev/null || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq redis-server >/dev/null; }
	@redis-server --version

lint: setup
	$(BIN)/ruff check nmt serving tests benchmarks
	$(BIN)/ruff format --check nmt serving tests benchmarks
	$(BIN)/mypy nmt serving

test: setup redis lint
	$(BIN)/pytest

# The service on every bundle in models/, ONNX Runtime on the CPU, an in-process cache unless
# NMT_REDIS_URL is set; other NMT_* settings pass through the environment.
serve: setup
	$(BIN)/nmt serve --models models --host $(HOST) --port $(PORT)

translate: setup
	@test -n "$(MODEL)" || { echo "make translate: no bundle under models/ or runs/; pass MODEL=path" >&2; exit 1; }
	@$(BIN)/nmt translate --model "$(MODEL)"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
